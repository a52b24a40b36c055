package docker

import (
	"bytes"
	"context"
	"path"
	"strconv"
	"strings"

	"github.com/docker/docker/client"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// Backend is one live docker sandbox: the file primitives and exec, all
// performed INSIDE the container by processes of the sandbox user (see
// ADR 0120). It implements sandbox.Backend.
type Backend struct {
	cli        client.APIClient
	info       sandbox.Info
	act        *activity
	unconfined bool
}

var _ sandbox.Backend = (*Backend)(nil)

// Info identifies the container.
func (b *Backend) Info() sandbox.Info { return b.info }

// Exit codes of the file scripts below (commands such as head, cat and find
// exit with 0 or 1, so these do not collide).
const (
	exitNotFound   = 3
	exitIsDir      = 4
	exitNotRegular = 5
	exitNotDir     = 6
	exitOutside    = 7
	exitHardLink   = 8
)

// The file scripts are constants; paths reach them only as positional
// parameters, always absolute and clean (Backend.resolve), and are used only
// quoted or in redirections, so no path is ever parsed as shell syntax or as
// a command option. Each starts with confineFunc, whose $1 is the
// confinement root.
const (
	// confineFunc defines inside(PATH): true when the deepest existing
	// ancestor of PATH (PATH itself if it exists or is a symlink, even a
	// dangling one) resolves, through every symlink, to a path under $W.
	// Symlinks are resolved by the container's kernel in the container's
	// filesystem: by the builtin `cd -P` (then $PWD is the physical path;
	// the scripts use only absolute paths, so moving is harmless), and by
	// `readlink -f` only for a symlink leaf. This is policy, not the
	// security boundary (the container is): a race that swaps a symlink
	// after the check only reaches files the sandbox user can read with exec
	// anyway.
	confineFunc = `inside() {
[ "$W" = / ] && return 0
p=$1
while [ ! -e "$p" ] && [ ! -L "$p" ]; do p=${p%/*}; p=${p:-/}; done
if [ -L "$p" ]; then
r=$(readlink -f "$p") || return 1
elif [ -d "$p" ]; then
cd -P "$p" || return 1
r=$PWD
else
d=${p%/*}
cd -P "${d:-/}" || return 1
r=$PWD/${p##*/}
fi
case "$r/" in "$W"*) return 0;; esac
return 1
}
W=$1
shift
`
	readScript = confineFunc + `inside "$1" || exit 7
[ -e "$1" ] || exit 3
[ -d "$1" ] && exit 4
[ -f "$1" ] || exit 5
exec head -c "$2" < "$1"`

	// writeScript opens the file without truncating it (fd 3, created if
	// missing), checks the inode it opened, not the path, and only then
	// truncates and writes that same inode through /proc/$$/fd/3: a file
	// with more than one hard link is refused (exit 8), because writing it
	// changes its other names too, and one planted in a bind-mounted
	// workspace before the run may name a file outside the workspace on the
	// host. The check runs inside the container, where the file tools run.
	writeScript = confineFunc + `inside "$1" || exit 7
[ -d "$1" ] && exit 4
if [ -e "$1" ] && [ ! -f "$1" ]; then exit 5; fi
[ -d "$2" ] || mkdir -p "$2" || exit 1
exec 3>>"$1" || exit 1
f=/proc/$$/fd/3
[ -f "$f" ] || exit 5
n=$(stat -L -c %h "$f") || exit 1
[ "$n" -gt 1 ] && exit 8
exec cat > "$f"`

	// walkScript lists directories, then an empty record, then everything
	// else; find does not follow symlinks below the root (-H: the root
	// itself is followed). Unreadable subdirectories are skipped silently.
	walkScript = confineFunc + `inside "$1" || exit 7
[ -e "$1" ] || exit 3
[ -d "$1" ] || exit 6
find -H "$1" -mindepth 1 -type d -print0 2>/dev/null
printf '\0'
find -H "$1" -mindepth 1 ! -type d -print0 2>/dev/null
exit 0`
)

// maxWalkOutput caps the listing a Walk reads (paths, NUL-separated).
const maxWalkOutput = 64 << 20

// shArgv runs a constant script with positional parameters; $0 names it in
// error messages.
func shArgv(script, name string, args ...string) []string {
	return append([]string{"/bin/sh", "-c", script, name}, args...)
}

// confinedArgv is shArgv for a script starting with confineFunc.
func (b *Backend) confinedArgv(script, name string, args ...string) []string {
	return shArgv(script, name, append([]string{b.confineRoot()}, args...)...)
}

// ReadFile returns at most maxBytes+1 bytes of the regular file at p, read
// inside the container: a symlink resolves in the container's filesystem,
// never on the host, even in a bind-mounted workspace.
func (b *Backend) ReadFile(ctx context.Context, p string, maxBytes int64) ([]byte, error) {
	abs, err := b.resolve(p)
	if err != nil {
		return nil, err
	}
	defer b.act.begin(b.info.ID)()
	limit := maxBytes + 1
	code, out, errOut, err := b.run(ctx, b.confinedArgv(readScript, "polos-read", abs, strconv.FormatInt(limit, 10)), nil, limit)
	if err != nil {
		return nil, err
	}
	if err := fileError(code, p, abs, errOut, "read"); err != nil {
		return nil, err
	}
	return out, nil
}

// WriteFile creates or truncates the file at p inside the container,
// creating parent directories, with the sandbox user's permissions.
func (b *Backend) WriteFile(ctx context.Context, p string, data []byte) error {
	abs, err := b.resolve(p)
	if err != nil {
		return err
	}
	if abs == "/" {
		return perr.New(sandbox.CodeBadRequest, "give a file path", "cannot write to /")
	}
	defer b.act.begin(b.info.ID)()
	code, _, errOut, err := b.run(ctx, b.confinedArgv(writeScript, "polos-write", abs, path.Dir(abs)), bytes.NewReader(data), maxStderrBytes)
	if err != nil {
		return err
	}
	return fileError(code, p, abs, errOut, "write")
}

// Walk lists everything under root inside the container with find and
// calls fn in filepath.WalkDir order. Symlinks are reported as non-dirs and
// never followed.
func (b *Backend) Walk(ctx context.Context, root string, fn func(rel string, isDir bool) error) error {
	abs, err := b.resolve(root)
	if err != nil {
		return err
	}
	defer b.act.begin(b.info.ID)()
	code, out, errOut, err := b.run(ctx, b.confinedArgv(walkScript, "polos-walk", abs), nil, maxWalkOutput)
	if err != nil {
		return err
	}
	if err := fileError(code, root, abs, errOut, "walk"); err != nil {
		return err
	}
	return visitWalk(parseWalkOutput(out, abs), fn)
}

// fileError turns a file script's exit code into a coded error.
func fileError(code int, p, abs string, stderr []byte, op string) error {
	switch code {
	case 0:
		return nil
	case exitOutside:
		return outsideWorkspace(p)
	case exitNotFound:
		return perr.New(sandbox.CodeNotFound, "check the path with glob or exec ls", "%s: %s does not exist in the sandbox", op, abs)
	case exitIsDir:
		return perr.New(sandbox.CodeBadRequest, "give a file path, or use glob to list a directory", "%s: %s is a directory", op, abs)
	case exitNotRegular:
		return perr.New(sandbox.CodeBadRequest, "give the path of a regular file", "%s: %s is not a regular file (device, fifo or socket)", op, abs)
	case exitNotDir:
		return perr.New(sandbox.CodeBadRequest, "give a directory path", "%s: %s is not a directory", op, abs)
	case exitHardLink:
		return hardLink(p, abs)
	}
	msg := strings.TrimSpace(string(stderr))
	if msg == "" {
		msg = "exit code " + strconv.Itoa(code)
	}
	return perr.New(sandbox.CodeBadRequest, "use a path the sandbox user may access: under "+WorkspacePath+" or /tmp",
		"%s: %s failed in the sandbox: %s", op, abs, msg)
}

// hardLink is the error for a write to a file with more than one hard link.
func hardLink(p, abs string) error {
	return perr.New(sandbox.CodeHardLink,
		"write a new file instead, or break the link first with exec (cp FILE FILE.new && mv FILE.new FILE) if you mean to change only this name",
		"write: %s (%q) has more than one hard link: writing it would change the other names too, which may be outside the workspace", abs, p)
}
