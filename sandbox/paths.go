package sandbox

import (
	"path"
	"strings"

	"github.com/polos-run/polos/perr"
)

// WorkspaceRel turns a path as an agent gave it into a clean slash-separated
// path relative to workspace (an absolute, clean path inside the sandbox).
// Relative paths are taken from the workspace; absolute paths must lie under
// it. "" and the workspace itself give ".". A path that leaves the workspace
// lexically (by "..", or absolute elsewhere) is a CodeOutsideWorkspace error;
// a NUL byte is CodeBadRequest.
//
// This check is lexical only: symlinks are the provider's business (the local
// provider resolves every component through os.Root).
func WorkspaceRel(workspace, p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", perr.New(CodeBadRequest, "remove the NUL byte from the path",
			"path %q contains a NUL byte", p)
	}
	if p == "" {
		return ".", nil
	}
	if path.IsAbs(p) {
		c := path.Clean(p)
		ws := path.Clean(workspace)
		switch {
		case c == ws:
			return ".", nil
		case ws == "/":
			return c[1:], nil
		case strings.HasPrefix(c, ws+"/"):
			return c[len(ws)+1:], nil
		}
		return "", outsideWorkspace(p, workspace)
	}
	c := path.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", outsideWorkspace(p, workspace)
	}
	return c, nil
}

func outsideWorkspace(p, workspace string) *perr.Error {
	return perr.New(CodeOutsideWorkspace,
		"use a path relative to the workspace, or an absolute path under "+workspace,
		"path %q is outside the workspace %s", p, workspace)
}
