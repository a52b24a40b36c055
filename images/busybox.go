package images

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/docker/docker/client"

	"github.com/polos-run/polos/perr"
)

// BusyboxEnv names a static busybox binary to use instead of searching.
const BusyboxEnv = "POLOS_BUSYBOX"

// busyboxPackage is the Debian package that ships a static busybox.
const busyboxPackage = "busybox-static"

// hostBusyboxPaths are where busybox-static installs its binary.
var hostBusyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox"}

// EnsureBusybox builds the image ref from a static busybox unless the engine
// already has it. It returns without touching the engine's images when ref
// exists, so it is safe to call from every test binary.
func EnsureBusybox(ctx context.Context, cli client.APIClient, ref string) error {
	ok, err := Exists(ctx, cli, ref)
	if err != nil || ok {
		return err
	}
	return BuildBusybox(ctx, cli, ref)
}

// BuildBusybox builds (or rebuilds) the image ref: it finds a static busybox
// (FindBusybox), lists its applets by running it on this host, and imports
// the BusyboxRootfs tar.
func BuildBusybox(ctx context.Context, cli client.APIClient, ref string) error {
	bin, cleanup, err := FindBusybox(ctx)
	if err != nil {
		return err
	}
	defer cleanup()
	data, err := os.ReadFile(bin)
	if err != nil {
		return perr.Wrap(err, CodeImageBuild, "", "cannot read %s", bin)
	}
	out, err := exec.CommandContext(ctx, bin, "--list-full").Output()
	if err != nil {
		return perr.Wrap(err, CodeImageBuild, "use a busybox built with --list-full support", "%s --list-full failed", bin)
	}
	var rootfs bytes.Buffer
	if err := BusyboxRootfs(&rootfs, data, strings.Split(string(out), "\n")); err != nil {
		return perr.Wrap(err, CodeImageBuild, "", "cannot assemble the busybox rootfs")
	}
	return Import(ctx, cli, &rootfs, ref)
}

// FindBusybox returns the path of a statically linked busybox: $POLOS_BUSYBOX,
// else an installed busybox-static, else one unpacked from the Debian
// package fetched with `apt-get download` into a temporary directory (which
// cleanup removes). A dynamically linked busybox is refused: the image has
// no libc.
func FindBusybox(ctx context.Context) (path string, cleanup func(), err error) {
	noop := func() {}
	if p := os.Getenv(BusyboxEnv); p != "" {
		if err := checkStatic(p); err != nil {
			return "", noop, err
		}
		return p, noop, nil
	}
	for _, p := range hostBusyboxPaths {
		if checkStatic(p) == nil {
			return p, noop, nil
		}
	}
	dir, err := os.MkdirTemp("", "polos-busybox-")
	if err != nil {
		return "", noop, perr.Wrap(err, CodeImageBuild, "", "cannot create a temporary directory")
	}
	cleanup = func() { os.RemoveAll(dir) }
	fix := "install it (apt-get install busybox-static) or set " + BusyboxEnv + " to a static busybox binary"
	dl := exec.CommandContext(ctx, "apt-get", "download", "-o", "APT::Sandbox::User=root", busyboxPackage)
	dl.Dir = dir
	if out, err := dl.CombinedOutput(); err != nil {
		cleanup()
		return "", noop, perr.Wrap(err, CodeImageBuild, fix, "apt-get download %s failed: %s", busyboxPackage, strings.TrimSpace(string(out)))
	}
	debs, _ := filepath.Glob(filepath.Join(dir, busyboxPackage+"_*.deb"))
	if len(debs) != 1 {
		cleanup()
		return "", noop, perr.New(CodeImageBuild, fix, "apt-get download left %d %s packages in %s, expected 1", len(debs), busyboxPackage, dir)
	}
	root := filepath.Join(dir, "root")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		cleanup()
		return "", noop, perr.Wrap(err, CodeImageBuild, fix, "dpkg-deb -x %s failed: %s", debs[0], strings.TrimSpace(string(out)))
	}
	p := filepath.Join(root, "bin", "busybox")
	if err := checkStatic(p); err != nil {
		cleanup()
		return "", noop, err
	}
	return p, cleanup, nil
}

// checkStatic accepts an ELF executable without a program interpreter.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return perr.Wrap(err, CodeImageBuild, "give a static busybox (Debian package busybox-static)", "%s is not a readable ELF binary", path)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return perr.New(CodeImageBuild, "give a static busybox (Debian package busybox-static)", "%s is dynamically linked", path)
		}
	}
	return nil
}
