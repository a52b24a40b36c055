package confine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// stagingDir is where the new root's tmpfs is mounted before pivot_root.
// Every source is captured (open_tree) before, so hiding the host's /tmp
// in this mount namespace hides nothing the sandbox needs.
const stagingDir = "/tmp"

// tmpfsSize bounds the new root's own tmpfs (directories, mount points and
// symlinks only); /dev/shm gets DevShmSize.
const (
	rootTmpfsOptions  = "mode=0755,size=1m"
	devTmpfsOptions   = "mode=0755,size=64k"
	maskTmpfsOptions  = "mode=0755,size=4k"
	devShmTmpfsOption = "mode=1777,size=64m"
)

// procReadOnly are the parts of the fresh /proc bound read-only over
// themselves: kernel tunables and triggers a uid-0 process could otherwise
// write (sandboxed root maps to the daemon's uid, which may be 0).
var procReadOnly = []string{"sys", "sysrq-trigger", "irq", "bus", "fs"}

// tree is a detached copy of a host mount tree, captured by open_tree.
type tree struct {
	path string // where it appears inside the sandbox
	fd   int
}

// capture clones the mount tree at src (recursively unless single is set)
// and applies attrs (MOUNT_ATTR_*) to the copy.
func capture(src, dst string, attrs uint64, single bool) (tree, error) {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	setFlags := uint(unix.AT_EMPTY_PATH)
	if !single {
		flags |= unix.AT_RECURSIVE
		setFlags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, flags)
	if err != nil {
		return tree{}, step("clone the mount of "+src+" (open_tree)", err)
	}
	if attrs != 0 {
		if err := unix.MountSetattr(fd, "", setFlags, &unix.MountAttr{Attr_set: attrs}); err != nil {
			unix.Close(fd)
			return tree{}, step("set mount attributes on "+src+" (mount_setattr)", err)
		}
	}
	return tree{path: dst, fd: fd}, nil
}

// attach mounts t at root+t.path, creating the mount point (a directory,
// or an empty file for a file tree) in the new root's tmpfs.
func (t tree) attach(root string, file bool) error {
	dst := filepath.Join(root, t.path)
	if file {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return step("create the mount point "+t.path, err)
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return step("create the mount point "+t.path, err)
		}
		if f != nil {
			f.Close()
		}
	} else if err := os.MkdirAll(dst, 0o755); err != nil {
		return step("create the mount point "+t.path, err)
	}
	err := unix.MoveMount(t.fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH)
	unix.Close(t.fd)
	return step("mount "+t.path+" (move_mount)", err)
}

// symlink is a symlink recreated in the new root.
type symlink struct{ path, target string }

// plan is the new root, captured from the host before it is built.
type plan struct {
	system   []tree // read-only directory trees (SystemDirs)
	extra    []tree // read-only directory trees (Config.ReadOnly), attached after /tmp
	files    []tree // read-only single files (targets of /etc symlinks)
	devices  []tree
	links    []symlink
	masks    []string // /etc secrets: paths to mask
	maskDirs map[string]bool
	tmp      tree
	ws       tree
}

// roots are the directories Landlock lets the sandbox read, as planned.
func (p *plan) readOnlyDirs() []string {
	var out []string
	for _, t := range append(append([]tree(nil), p.system...), p.extra...) {
		out = append(out, t.path)
	}
	return out
}

func (p *plan) readOnlyFiles() []string {
	var out []string
	for _, t := range p.files {
		out = append(out, t.path)
	}
	return out
}

const (
	roAttrs  = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
	rwAttrs  = unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
	devAttrs = unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NOEXEC
)

// under reports whether p is dir or inside it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// capturePlan captures every source from the host's tree.
func capturePlan(cfg *Config) (*plan, error) {
	if err := CheckWorkspace(cfg.Workspace); err != nil {
		return nil, err
	}
	p := &plan{maskDirs: map[string]bool{}}
	var roDirs []string
	for i, dir := range append(append([]string(nil), SystemDirs...), cfg.ReadOnly...) {
		extra := i >= len(SystemDirs)
		if extra && (!filepath.IsAbs(dir) || filepath.Clean(dir) != dir || dir == "/") {
			return nil, fmt.Errorf("read-only path %q: want a clean absolute directory other than /", dir)
		}
		st, err := os.Lstat(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return nil, step("inspect "+dir, err)
		case st.Mode()&fs.ModeSymlink != 0 && !extra:
			target, err := os.Readlink(dir)
			if err != nil {
				return nil, step("read the symlink "+dir, err)
			}
			p.links = append(p.links, symlink{dir, target})
		case st.Mode()&fs.ModeSymlink != 0:
			return nil, fmt.Errorf("read-only path %q is a symlink; give the directory it leads to", dir)
		case st.IsDir():
			t, err := capture(dir, dir, roAttrs, false)
			if err != nil {
				return nil, err
			}
			if extra {
				p.extra = append(p.extra, t)
			} else {
				p.system = append(p.system, t)
			}
			roDirs = append(roDirs, dir)
		}
	}
	inRO := func(path string) bool {
		for _, d := range roDirs {
			if under(path, d) {
				return true
			}
		}
		return under(path, "/proc") || under(path, "/dev")
	}
	// Secrets in /etc.
	for _, pat := range EtcSecrets {
		matches, _ := filepath.Glob(filepath.Join("/etc", pat))
		for _, m := range matches {
			st, err := os.Lstat(m)
			if err != nil || st.Mode()&fs.ModeSymlink != 0 {
				continue // a symlink is masked where it leads, if that is in the sandbox
			}
			p.masks = append(p.masks, m)
			p.maskDirs[m] = st.IsDir()
		}
	}
	// /etc entries that are symlinks to files outside the sandbox (resolv.conf
	// to /run/systemd/resolve/...): bind the file they point to, read-only.
	if entries, err := os.ReadDir("/etc"); err == nil {
		for _, e := range entries {
			if e.Type()&fs.ModeSymlink == 0 {
				continue
			}
			target, err := filepath.EvalSymlinks(filepath.Join("/etc", e.Name()))
			if err != nil || inRO(target) {
				continue
			}
			if st, err := os.Stat(target); err != nil || !st.Mode().IsRegular() {
				continue
			}
			t, err := capture(target, target, roAttrs, true)
			if err != nil {
				return nil, err
			}
			p.files = append(p.files, t)
		}
	}
	for _, d := range Devices {
		if _, err := os.Stat(d); err != nil {
			continue
		}
		t, err := capture(d, d, devAttrs, true)
		if err != nil {
			return nil, err
		}
		p.devices = append(p.devices, t)
	}
	var err error
	if p.tmp, err = capture(cfg.Tmp, "/tmp", rwAttrs, false); err != nil {
		return nil, err
	}
	if p.ws, err = capture(cfg.Workspace, cfg.Workspace, rwAttrs, false); err != nil {
		return nil, err
	}
	return p, nil
}

// buildRoot makes the sandbox's root and pivots into it; afterwards
// nothing of the host's tree is reachable.
func buildRoot(cfg *Config) (*plan, error) {
	// Nothing mounted here propagates to the host, and nothing the host
	// mounts later appears here.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, step("make the mount namespace private", err)
	}
	p, err := capturePlan(cfg)
	if err != nil {
		return nil, err
	}
	r := stagingDir
	if err := unix.Mount("tmpfs", r, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, rootTmpfsOptions); err != nil {
		return nil, step("mount the new root's tmpfs", err)
	}
	for _, t := range p.system {
		if err := t.attach(r, false); err != nil {
			return nil, err
		}
	}
	for _, m := range p.masks {
		dst := filepath.Join(r, m)
		if p.maskDirs[m] {
			err = unix.Mount("tmpfs", dst, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, maskTmpfsOptions)
		} else {
			err = unix.Mount("/dev/null", dst, "", unix.MS_BIND, "")
		}
		if err != nil {
			return nil, step("mask "+m, err)
		}
	}
	// A fresh /proc of the new PID namespace, mounted while the host's /proc
	// is still visible (the kernel requires a fully visible procfs to allow
	// it), with its writable tunables read-only.
	proc := filepath.Join(r, "proc")
	if err := os.MkdirAll(proc, 0o755); err != nil {
		return nil, step("create /proc", err)
	}
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, step("mount a new /proc", err)
	}
	for _, sub := range procReadOnly {
		sp := filepath.Join(proc, sub)
		if _, err := os.Lstat(sp); err != nil {
			continue
		}
		if err := unix.Mount(sp, sp, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return nil, step("bind /proc/"+sub, err)
		}
		if err := unix.MountSetattr(unix.AT_FDCWD, sp, unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: roAttrs | unix.MOUNT_ATTR_NOEXEC}); err != nil {
			return nil, step("make /proc/"+sub+" read-only", err)
		}
	}
	if err := p.tmp.attach(r, false); err != nil {
		return nil, err
	}
	for _, t := range p.extra {
		if err := t.attach(r, false); err != nil {
			return nil, err
		}
	}
	if err := p.ws.attach(r, false); err != nil {
		return nil, err
	}
	if err := buildDev(r, p); err != nil {
		return nil, err
	}
	for _, t := range p.files {
		if err := t.attach(r, true); err != nil {
			return nil, err
		}
	}
	// Symlinks last: nothing above may resolve through one (an absolute
	// target would still lead into the host's tree before pivot_root).
	links := append(p.links, symlink{"/var/tmp", "/tmp"})
	for _, l := range links {
		dst := filepath.Join(r, l.path)
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, step("create the parent of "+l.path, err)
		}
		if err := os.Symlink(l.target, dst); err != nil {
			return nil, step("create the symlink "+l.path, err)
		}
	}
	if err := unix.Chdir(r); err != nil {
		return nil, step("enter the new root", err)
	}
	// pivot_root(".", ".") stacks the old root on the new one; detaching it
	// leaves no path back into the host's tree.
	if err := unix.PivotRoot(".", "."); err != nil {
		return nil, step("pivot_root into the new root", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return nil, step("detach the host's root", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return nil, step("enter /", err)
	}
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
		return nil, step("make the new root read-only", err)
	}
	return p, nil
}

// buildDev makes /dev: a small tmpfs with the device nodes bound from the
// host, the /proc/self/fd symlinks and a private /dev/shm; then read-only.
func buildDev(r string, p *plan) error {
	dev := filepath.Join(r, "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return step("create /dev", err)
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, devTmpfsOptions); err != nil {
		return step("mount /dev", err)
	}
	for _, t := range p.devices {
		if err := t.attach(r, true); err != nil {
			return err
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return step("create /dev/"+name, err)
		}
	}
	shm := filepath.Join(dev, "shm")
	if err := os.Mkdir(shm, 0o755); err != nil {
		return step("create /dev/shm", err)
	}
	if err := unix.Mount("tmpfs", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, devShmTmpfsOption); err != nil {
		return step("mount /dev/shm", err)
	}
	return step("make /dev read-only", unix.MountSetattr(unix.AT_FDCWD, dev, 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}))
}
