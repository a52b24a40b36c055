package e2b

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

// locateScript prints the physical workspace, the physical path and its type
// (d directory, f regular file, o other, - missing), NUL-separated. Paths
// arrive through the environment, never in the script's text. Symlinks are
// followed as the kernel would (cd -P for directories, readlink for the
// leaf, at most 40 hops, else exit 40); components after the first missing
// one are kept as given, so a dangling symlink resolves to where a write
// would create the file. Plain POSIX sh plus readlink: works on Debian and
// busybox templates.
const locateScript = `resolve() { # always called in $(...): exit leaves the subshell
  p=$1 n=0
  while :; do
    d=${p%/*} b=${p##*/} tail=
    [ -n "$d" ] || d=/
    link= rest=
    while ! cd -P -- "$d" 2>/dev/null; do
      if [ -L "$d" ]; then link=$d rest=$tail/$b; break; fi
      tail=/${d##*/}$tail
      d=${d%/*}
      [ -n "$d" ] || d=/
    done
    if [ -z "$link" ] && [ -z "$tail" ] && [ -n "$b" ] && [ -L "$b" ]; then link=$PWD/$b rest=; fi
    if [ -n "$link" ]; then
      n=$((n+1))
      [ "$n" -le 40 ] || { echo "too many levels of symbolic links" >&2; exit 40; }
      t=$(readlink -- "$link" && echo x) || exit 41
      t=${t%?x}
      case $t in /*) ;; *) l=${link%/*}; t=${l:-/}/$t ;; esac
      p=$t$rest
      continue
    fi
    case $b in
    .|..) if [ -z "$tail" ]; then cd -P -- "$b" && printf '%s' "$PWD"; else printf '%s' "$PWD$tail/$b"; fi ;;
    *) printf '%s' "$PWD$tail/$b" ;;
    esac
    exit 0
  done
}
w=$(resolve "$POLOS_WORKSPACE" && echo x) || exit $?
r=$(resolve "$POLOS_PATH" && echo x) || exit $?
w=${w%x} r=${r%x}
if [ -d "$r" ]; then t=d; elif [ -f "$r" ]; then t=f; elif [ -e "$r" ]; then t=o; else t=-; fi
printf '%s\000%s\000%s' "$w" "$r" "$t"`

// exitSymlinkLoop is locateScript's exit status for a symlink loop.
const exitSymlinkLoop = 40

// location is where an agent's path leads inside the sandbox.
type location struct {
	lexical  string // absolute path as given, cleaned (inside the workspace)
	physical string // the same with every symlink resolved
	kind     byte   // 'd', 'f', 'o' (other) or '-' (missing)
}

// locate confines p to the workspace: first lexically (sandbox.WorkspaceRel:
// "..", absolute paths elsewhere), then physically, by resolving symlinks
// inside the sandbox with locateScript, so a symlink in the leaf or in a
// parent directory that leads out of the workspace is CodeOutsideWorkspace
// too. This costs one process start per file operation. The check and the
// use are two calls: a process inside the sandbox swapping a directory for a
// symlink in between could win the race, which only matters against the
// agent itself, and the agent can run any command in the sandbox anyway.
func (b *Backend) locate(ctx context.Context, p string) (location, error) {
	rel, err := sandbox.WorkspaceRel(b.info.Workspace, p)
	if err != nil {
		return location{}, err
	}
	lexical := path.Join(b.info.Workspace, rel)
	var out, errOut bytes.Buffer
	ss, openErr, readErr := b.run(ctx, "check path "+p, wire.ProcessConfig{
		Cmd:  Shell,
		Args: []string{"-c", locateScript},
		Envs: map[string]string{"POLOS_WORKSPACE": b.info.Workspace, "POLOS_PATH": lexical},
		Cwd:  "/",
	}, b.envd.reqTimeout, &out, &errOut)
	switch {
	case openErr != nil:
		return location{}, openErr
	case readErr != nil:
		return location{}, perr.Wrap(readErr, sandbox.CodeProvider, "retry; check that the sandbox is still running", "e2b: checking path %q: the stream broke off", p)
	case ss.failure != nil:
		return location{}, connectFailure("check path "+p, ss.failure)
	case ss.end == nil:
		return location{}, perr.New(sandbox.CodeProvider, fixReportBug, "e2b: checking path %q: no end event", p)
	case ss.end.ExitCode == exitSymlinkLoop:
		return location{}, perr.New(sandbox.CodeBadRequest, "remove the symlink loop", "path %q has too many levels of symlinks", p)
	case ss.end.ExitCode != 0:
		return location{}, perr.New(sandbox.CodeProvider, "check that the sandbox template has /bin/sh and readlink", "e2b: checking path %q failed with exit code %d: %s", p, ss.end.ExitCode, truncateForError(errOut.String()))
	}
	fields := strings.Split(out.String(), "\x00")
	if len(fields) != 3 || len(fields[2]) != 1 || !path.IsAbs(fields[0]) || !path.IsAbs(fields[1]) {
		return location{}, perr.New(sandbox.CodeProvider, fixReportBug, "e2b: checking path %q: unexpected answer %q", p, truncateForError(out.String()))
	}
	ws, phys := path.Clean(fields[0]), path.Clean(fields[1])
	if phys != ws && !strings.HasPrefix(phys, strings.TrimSuffix(ws, "/")+"/") {
		return location{}, perr.New(sandbox.CodeOutsideWorkspace, "use paths inside the workspace; symlinks may not lead out of it",
			"path %q leads outside the workspace %s (through a symlink, to %s)", p, b.info.Workspace, phys)
	}
	return location{lexical: lexical, physical: phys, kind: fields[2][0]}, nil
}

func (l location) wantDir(p string) error {
	switch l.kind {
	case 'd':
		return nil
	case '-':
		return perr.New(sandbox.CodeNotFound, "check the path with glob", "no directory %q in the sandbox", p)
	}
	return perr.New(sandbox.CodeBadRequest, "give a directory", "%q is not a directory", p)
}

func (l location) wantFile(p string, mayBeMissing bool) error {
	switch l.kind {
	case 'f':
		return nil
	case '-':
		if mayBeMissing {
			return nil
		}
		return perr.New(sandbox.CodeNotFound, "check the path with glob", "no file %q in the sandbox", p)
	case 'd':
		return perr.New(sandbox.CodeBadRequest, "list a directory with glob", "%q is a directory, not a file", p)
	}
	return perr.New(sandbox.CodeBadRequest, "use exec for devices, sockets and pipes", "%q is not a regular file", p)
}

func emptyPath(op string) error {
	return perr.New(sandbox.CodeBadRequest, "give a file path", "%s needs a path, got an empty one", op)
}

// ReadFile downloads p with GET /files, reading at most maxBytes+1 bytes.
func (b *Backend) ReadFile(ctx context.Context, p string, maxBytes int64) ([]byte, error) {
	if p == "" {
		return nil, emptyPath("read")
	}
	loc, err := b.locate(ctx, p)
	if err != nil {
		return nil, err
	}
	if err := loc.wantFile(p, false); err != nil {
		return nil, err
	}
	return b.envd.readFile(ctx, loc.physical, maxBytes)
}

// WriteFile uploads data to p with POST /files; envd creates the parent
// directories and truncates an existing file.
func (b *Backend) WriteFile(ctx context.Context, p string, data []byte) error {
	if p == "" {
		return emptyPath("write")
	}
	loc, err := b.locate(ctx, p)
	if err != nil {
		return err
	}
	if loc.lexical == b.info.Workspace {
		return perr.New(sandbox.CodeBadRequest, "give a file path inside the workspace", "cannot write to the workspace directory itself")
	}
	if err := loc.wantFile(p, true); err != nil {
		return err
	}
	return b.envd.writeFile(ctx, loc.physical, data)
}

// Walk lists root with filesystem.Filesystem/ListDir, walkDepthPerCall
// levels per call, and calls fn in lexical depth-first order (parents
// before their children, siblings by name). Symlinks are reported as files
// and never followed. A directory fn skips is not listed further.
func (b *Backend) Walk(ctx context.Context, root string, fn func(rel string, isDir bool) error) error {
	loc, err := b.locate(ctx, root)
	if err != nil {
		return err
	}
	if err := loc.wantDir(root); err != nil {
		return err
	}
	err = b.walkDir(ctx, loc.physical, "", fn)
	if errors.Is(err, fs.SkipAll) || errors.Is(err, fs.SkipDir) {
		return nil
	}
	return err
}

// walkNode is a directory of one ListDir answer, with its children by name.
type walkNode struct {
	entry    wire.EntryInfo
	depth    int // 1 for children of the listed directory
	children map[string]*walkNode
}

func (b *Backend) walkDir(ctx context.Context, dir, relPrefix string, fn func(rel string, isDir bool) error) error {
	entries, err := b.envd.listDir(ctx, dir, walkDepthPerCall)
	if err != nil {
		return err
	}
	top, err := buildTree(dir, entries)
	if err != nil {
		return err
	}
	return b.visit(ctx, dir, relPrefix, top, fn)
}

// buildTree arranges ListDir entries into a tree. envd gives each entry's
// absolute path under the listed directory, which may be spelled as
// requested or with the directory's symlinks resolved; the common base is
// taken from the shallowest entry.
func buildTree(dir string, entries []wire.EntryInfo) (*walkNode, error) {
	top := &walkNode{children: map[string]*walkNode{}}
	if len(entries) == 0 {
		return top, nil
	}
	base := ""
	for _, e := range entries {
		if d := path.Dir(path.Clean(e.Path)); base == "" || len(d) < len(base) {
			base = d
		}
	}
	prefix := strings.TrimSuffix(base, "/") + "/"
	for _, e := range entries {
		p := path.Clean(e.Path)
		if !strings.HasPrefix(p, prefix) {
			return nil, perr.New(sandbox.CodeProvider, fixReportBug, "e2b: listing %s: entry %q is not under %s", dir, e.Path, base)
		}
		parts := strings.Split(p[len(prefix):], "/")
		n := top
		for i, name := range parts {
			child := n.children[name]
			if child == nil {
				child = &walkNode{depth: i + 1, children: map[string]*walkNode{}}
				n.children[name] = child
			}
			if i == len(parts)-1 {
				child.entry = e
			}
			n = child
		}
	}
	return top, nil
}

// visit calls fn on n's children in name order, descending into
// directories; those at the depth limit are listed by a further call.
func (b *Backend) visit(ctx context.Context, dir, relPrefix string, n *walkNode, fn func(rel string, isDir bool) error) error {
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		child := n.children[name]
		rel := name
		if relPrefix != "" {
			rel = relPrefix + "/" + name
		}
		isDir := child.entry.Type == wire.FileTypeDirectory
		err := fn(rel, isDir)
		switch {
		case errors.Is(err, fs.SkipDir):
			if !isDir {
				return nil // skip the rest of this directory, as fs.WalkDir does
			}
			continue
		case err != nil:
			return err
		case !isDir:
			continue
		}
		childDir := path.Join(dir, name)
		if child.depth == walkDepthPerCall && len(child.children) == 0 {
			err = b.walkDir(ctx, childDir, rel, fn)
		} else {
			err = b.visit(ctx, childDir, rel, child, fn)
		}
		if errors.Is(err, fs.SkipDir) {
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}
