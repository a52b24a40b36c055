package local

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// backend is one local sandbox: the file primitives of sandbox.Backend over
// os.Root on the workspace (this file) and exec (exec.go).
type backend struct {
	p    *Provider
	info sandbox.Info
	spec sandbox.Spec
}

func (b *backend) Info() sandbox.Info { return b.info }

// openRoot opens the workspace afresh for each operation, so a workspace
// removed and recreated is seen as it is now, and no descriptor outlives the
// operation.
func (b *backend) openRoot() (*os.Root, error) {
	r, err := os.OpenRoot(b.info.Workspace)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, perr.Wrap(err, sandbox.CodeSandboxLost, "create a new sandbox",
				"the workspace %s of local sandbox %s no longer exists", b.info.Workspace, b.info.ID)
		}
		return nil, perr.Wrap(err, sandbox.CodeProvider, "check the workspace directory's permissions",
			"cannot open the workspace %s", b.info.Workspace)
	}
	return r, nil
}

// resolve confines p lexically and opens the root it is resolved in.
func (b *backend) resolve(p string) (*os.Root, string, error) {
	rel, err := sandbox.WorkspaceRel(b.info.Workspace, p)
	if err != nil {
		return nil, "", err
	}
	r, err := b.openRoot()
	if err != nil {
		return nil, "", err
	}
	return r, rel, nil
}

// isEscape reports an os.Root refusal to leave the root. os.Root does not
// export this error; TestRootEscapeDetected pins the text.
func isEscape(err error) bool {
	return err != nil && strings.Contains(err.Error(), "path escapes from parent")
}

// fileErr turns an os error on path p into a coded error.
func (b *backend) fileErr(err error, p string) error {
	switch {
	case isEscape(err):
		return perr.New(sandbox.CodeOutsideWorkspace, "use paths inside the workspace; symlinks may not lead out of it",
			"path %q leads outside the workspace %s (through \"..\" or a symlink)", p, b.info.Workspace)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		if _, serr := os.Stat(b.info.Workspace); serr != nil {
			return perr.Wrap(err, sandbox.CodeSandboxLost, "create a new sandbox",
				"the workspace %s of local sandbox %s no longer exists", b.info.Workspace, b.info.ID)
		}
		return perr.New(sandbox.CodeNotFound, "check the path with glob", "no file or directory %q in the workspace", p)
	case errors.Is(err, syscall.EISDIR):
		return perr.New(sandbox.CodeBadRequest, "list a directory with glob", "%q is a directory, not a file", p)
	case errors.Is(err, syscall.ELOOP):
		return perr.New(sandbox.CodeBadRequest, "remove the symlink loop", "path %q has too many levels of symlinks", p)
	case errors.Is(err, fs.ErrPermission):
		return perr.Wrap(err, sandbox.CodeProvider, "fix the file's permissions with exec (chmod)", "permission denied on %q", p)
	}
	return perr.Wrap(err, sandbox.CodeProvider, "", "file operation on %q failed", p)
}

// openRegular opens rel in r and refuses anything but a regular file. The
// open is non-blocking so a FIFO planted in the workspace cannot hang it.
func (b *backend) openRegular(r *os.Root, rel, p string, flag int) (*os.File, error) {
	f, err := r.OpenFile(rel, flag|syscall.O_NONBLOCK, 0o644)
	if err != nil {
		return nil, b.fileErr(err, p)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, b.fileErr(err, p)
	}
	if st.IsDir() {
		f.Close()
		return nil, b.fileErr(syscall.EISDIR, p)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, perr.New(sandbox.CodeBadRequest, "use exec for devices, sockets and pipes", "%q is not a regular file (%s)", p, st.Mode().Type())
	}
	return f, nil
}

func (b *backend) ReadFile(_ context.Context, p string, maxBytes int64) ([]byte, error) {
	r, rel, err := b.resolve(p)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	f, err := b.openRegular(r, rel, p, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
	if err != nil {
		return nil, b.fileErr(err, p)
	}
	return data, nil
}

func (b *backend) WriteFile(_ context.Context, p string, data []byte) error {
	r, rel, err := b.resolve(p)
	if err != nil {
		return err
	}
	defer r.Close()
	if rel == "." {
		return perr.New(sandbox.CodeBadRequest, "give a file path inside the workspace", "cannot write to the workspace directory itself")
	}
	if dir := path.Dir(rel); dir != "." {
		if err := r.MkdirAll(dir, 0o755); err != nil {
			return b.fileErr(err, p)
		}
	}
	// No O_TRUNC at open: the file is checked to be regular before it is cut.
	f, err := b.openRegular(r, rel, p, os.O_WRONLY|os.O_CREATE)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(0); err != nil {
		return b.fileErr(err, p)
	}
	if _, err := f.Write(data); err != nil {
		return b.fileErr(err, p)
	}
	return b.fileErrOrNil(f.Close(), p)
}

func (b *backend) fileErrOrNil(err error, p string) error {
	if err == nil || errors.Is(err, os.ErrClosed) {
		return nil
	}
	return b.fileErr(err, p)
}

func (b *backend) Walk(ctx context.Context, root string, fn func(rel string, isDir bool) error) error {
	r, rel, err := b.resolve(root)
	if err != nil {
		return err
	}
	defer r.Close()
	return fs.WalkDir(r.FS(), rel, func(p string, d fs.DirEntry, err error) error {
		if p == rel {
			if err != nil {
				return b.fileErr(err, root)
			}
			if !d.IsDir() {
				return perr.New(sandbox.CodeBadRequest, "give a directory as cwd", "%q is not a directory", root)
			}
			return nil
		}
		if err != nil {
			return nil // an unreadable subdirectory is skipped
		}
		if rel != "." {
			p = p[len(rel)+1:]
		}
		return fn(p, d.IsDir())
	})
}
