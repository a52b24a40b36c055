package e2bfake

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// maxSymlinkHops is the kernel's limit on symlinks followed in one lookup.
const maxSymlinkHops = 40

// errSymlinkLoop is ELOOP of the fake's own lookup.
var errSymlinkLoop = errors.New("too many levels of symbolic links")

// resolve follows symlinks in the sandbox path sp the way the kernel would
// inside the sandbox (as if chrooted into its directory): absolute targets
// start again at the sandbox's "/", ".." stops at "/". Components after the
// first missing one are kept as they are; when followLeaf is false the last
// component is not followed (lstat semantics). The result is a clean
// sandbox path without symlinks (at the time of the call) that os.Root can
// open; nothing here can name a host path outside the sandbox directory.
func (sb *fakeSandbox) resolve(sp string, followLeaf bool) (string, error) {
	rest := strings.Split(strings.TrimPrefix(path.Clean("/"+sp), "/"), "/")
	cur := "/"
	hops := 0
	for len(rest) > 0 {
		comp := rest[0]
		rest = rest[1:]
		switch comp {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, comp)
		if len(rest) == 0 && !followLeaf {
			return next, nil
		}
		info, err := os.Lstat(sb.hostPath(next))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return path.Join(append([]string{next}, rest...)...), nil
			}
			return "", err
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > maxSymlinkHops {
			return "", errSymlinkLoop
		}
		target, err := os.Readlink(sb.hostPath(next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return cur, nil
}

// hostPath is where the clean sandbox path sp lives on this machine.
func (sb *fakeSandbox) hostPath(sp string) string {
	return filepath.Join(sb.dir, filepath.FromSlash(path.Clean("/"+sp)))
}
