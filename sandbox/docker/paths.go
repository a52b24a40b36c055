package docker

import (
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// resolve turns a path as the agent gave it into an absolute, clean path
// inside the container. Confined (the default), sandbox.WorkspaceRel
// refuses paths that leave WorkspacePath lexically (".." or absolute
// elsewhere) with CodeOutsideWorkspace; the scripts then refuse symlinks
// that lead out of it, resolving them inside the container (confineFunc).
// Unconfined (Options.AllowPathsOutsideWorkspace), see resolveUnconfined.
func (b *Backend) resolve(p string) (string, error) {
	if b.unconfined {
		return resolveUnconfined(p)
	}
	rel, err := sandbox.WorkspaceRel(WorkspacePath, p)
	if err != nil {
		return "", err
	}
	return path.Join(WorkspacePath, rel), nil
}

// confineRoot is the prefix ("$W" in confineFunc) every resolved path must
// have: the workspace, or "/" when unconfined.
func (b *Backend) confineRoot() string {
	if b.unconfined {
		return "/"
	}
	return WorkspacePath + "/"
}

// resolveUnconfined resolves relative paths against WorkspacePath and
// accepts absolute paths and ".." anywhere: the container is then the only
// confinement, as for a command run by exec.
func resolveUnconfined(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", perr.New(sandbox.CodeBadRequest, "remove the NUL byte from the path", "path %q contains a NUL byte", p)
	}
	if p == "" {
		return WorkspacePath, nil
	}
	if !path.IsAbs(p) {
		p = path.Join(WorkspacePath, p)
	}
	return path.Clean(p), nil
}

// outsideWorkspace is the error for a path whose symlinks lead out of the
// workspace (found inside the container).
func outsideWorkspace(p string) error {
	return perr.New(sandbox.CodeOutsideWorkspace, "use a path under "+WorkspacePath+" that does not go through a symlink leading out of it",
		"path %q resolves (through a symlink) outside the workspace %s", p, WorkspacePath)
}

// walkEntry is one entry found under a Walk root.
type walkEntry struct {
	rel   string
	isDir bool
}

// parseWalkOutput decodes the walk script's output: NUL-terminated paths of
// directories, an empty record, then NUL-terminated paths of everything
// else; every path starts with root. It returns the entries relative to root
// in the order filepath.WalkDir would visit them.
func parseWalkOutput(out []byte, root string) []walkEntry {
	prefix := root
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	var entries []walkEntry
	isDir := true
	for _, rec := range strings.Split(string(out), "\x00") {
		if rec == "" {
			isDir = false // the separator (a trailing empty split is harmless)
			continue
		}
		rel, ok := strings.CutPrefix(rec, prefix)
		if !ok || rel == "" {
			continue
		}
		entries = append(entries, walkEntry{rel: rel, isDir: isDir})
	}
	slices.SortFunc(entries, func(a, b walkEntry) int { return compareWalkOrder(a.rel, b.rel) })
	return entries
}

// compareWalkOrder orders slash-separated paths component by component, so a
// directory's subtree comes right after it ("a", "a/b", "a-c"), as in
// filepath.WalkDir.
func compareWalkOrder(a, b string) int {
	for {
		ha, ta, moreA := strings.Cut(a, "/")
		hb, tb, moreB := strings.Cut(b, "/")
		if c := strings.Compare(ha, hb); c != 0 {
			return c
		}
		switch {
		case !moreA && !moreB:
			return 0
		case !moreA:
			return -1
		case !moreB:
			return 1
		}
		a, b = ta, tb
	}
}

// visitWalk calls fn for entries in order with filepath.WalkDir's handling of
// fs.SkipDir (on a directory: skip its subtree; on a file: skip the rest of
// its directory) and fs.SkipAll.
func visitWalk(entries []walkEntry, fn func(rel string, isDir bool) error) error {
	skip := "" // entries under this prefix are skipped
	for _, e := range entries {
		if skip != "" && strings.HasPrefix(e.rel, skip) {
			continue
		}
		skip = ""
		err := fn(e.rel, e.isDir)
		switch {
		case err == nil:
		case err == fs.SkipAll:
			return nil
		case err == fs.SkipDir && e.isDir:
			skip = e.rel + "/"
		case err == fs.SkipDir:
			dir := path.Dir(e.rel)
			if dir == "." {
				return nil
			}
			skip = dir + "/"
		default:
			return err
		}
	}
	return nil
}
