package confine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Supported reports whether this platform can confine commands at all.
const Supported = true

// Cmd is one confined command, started by Start.
type Cmd struct {
	*exec.Cmd
	errR, errW *os.File
}

// Command prepares cfg to run confined. The caller sets Stdout and Stderr,
// then calls Start, then Wait (and SetupError to learn whether the
// sandbox came up).
func Command(cfg Config) (*Cmd, error) {
	arg, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	c := exec.Command("/proc/self/exe")
	c.Args = []string{InitArg0, string(arg)}
	c.Env = []string{} // not nil: nil would pass the daemon's environment
	c.Dir = "/"
	c.ExtraFiles = []*os.File{errW}
	c.SysProcAttr = sysProcAttr(cfg.Network)
	return &Cmd{Cmd: c, errR: errR, errW: errW}, nil
}

// sysProcAttr puts the init into new namespaces, as the daemon's own uid
// and gid (mapped to themselves, so files keep their owners). A non-root
// daemon passes the init the capabilities it needs in its namespaces
// (mounts, the loopback interface, dropping the bounding set) as ambient
// capabilities, since exec would otherwise clear them.
func sysProcAttr(network bool) *syscall.SysProcAttr {
	uid, gid := os.Getuid(), os.Getgid()
	flags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS)
	if !network {
		flags |= unix.CLONE_NEWNET
	}
	a := &syscall.SysProcAttr{
		Cloneflags:  flags,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
		// The sandbox dies with the daemon.
		Pdeathsig: syscall.SIGKILL,
	}
	if uid != 0 {
		a.AmbientCaps = []uintptr{unix.CAP_SYS_ADMIN, unix.CAP_NET_ADMIN, unix.CAP_SETPCAP}
	}
	return a
}

// Start starts the init. Its error pipe's write end is closed here, so
// SetupError sees end-of-file once the shell runs.
func (c *Cmd) Start() error {
	err := c.Cmd.Start()
	c.errW.Close()
	if err != nil {
		c.errR.Close()
	}
	return err
}

// SetupError blocks until the init either ran the shell (nil) or failed
// (its reason). Call it at most once, after Start succeeded.
func (c *Cmd) SetupError() error {
	defer c.errR.Close()
	b, err := io.ReadAll(io.LimitReader(c.errR, 64<<10))
	if err != nil {
		return fmt.Errorf("reading the sandbox init's error pipe: %w", err)
	}
	if len(b) > 0 {
		return errors.New(string(b))
	}
	return nil
}

// Probe builds a complete sandbox on workspace and tmp without running a
// command: what the provider's start-up check runs.
func Probe(ctx context.Context, workspace, tmp string) error {
	c, err := Command(Config{Workspace: workspace, Tmp: tmp, Probe: true})
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	c.Stdout, c.Stderr = io.Discard, &stderr
	if err := c.Start(); err != nil {
		return fmt.Errorf("start the sandbox init: %w", err)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = c.Process.Kill()
		case <-done:
		}
	}()
	setupErr := c.SetupError()
	waitErr := c.Wait()
	close(done)
	switch {
	case setupErr != nil:
		return setupErr
	case ctx.Err() != nil:
		return fmt.Errorf("the sandbox init did not finish: %w", ctx.Err())
	case waitErr != nil:
		return fmt.Errorf("the sandbox init failed: %v %s", waitErr, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Missing lists what this kernel lacks for confinement, each with how to
// fix it; empty when nothing is known to be missing (Probe has the last
// word).
func Missing() []string {
	var out []string
	abi, err := LandlockABI()
	switch {
	case errors.Is(err, unix.ENOSYS):
		out = append(out, "Landlock: this kernel has no Landlock support (landlock_create_ruleset: ENOSYS); "+
			fmt.Sprintf("use a kernel built with CONFIG_SECURITY_LANDLOCK=y (Linux 5.19 or newer for ABI %d)", MinLandlockABI))
	case errors.Is(err, unix.EOPNOTSUPP):
		out = append(out, "Landlock: compiled in but disabled at boot (landlock_create_ruleset: EOPNOTSUPP); "+
			"add landlock to the kernel's lsm= boot parameter (e.g. lsm=landlock,lockdown,yama,integrity,apparmor) and reboot")
	case err != nil:
		out = append(out, "Landlock: cannot query the ABI version: "+err.Error())
	case abi < MinLandlockABI:
		out = append(out, fmt.Sprintf("Landlock: the kernel reports ABI %d, at least ABI %d (Linux 5.19) is needed; upgrade the kernel", abi, MinLandlockABI))
	}
	if n, ok := readSysctl("/proc/sys/user/max_user_namespaces"); ok && n == "0" {
		out = append(out, "user namespaces: user.max_user_namespaces is 0; run sysctl -w user.max_user_namespaces=15000 (and set it in /etc/sysctl.d)")
	}
	if os.Getuid() != 0 {
		if n, ok := readSysctl("/proc/sys/kernel/unprivileged_userns_clone"); ok && n == "0" {
			out = append(out, "user namespaces: kernel.unprivileged_userns_clone is 0; run sysctl -w kernel.unprivileged_userns_clone=1 (and set it in /etc/sysctl.d)")
		}
		if n, ok := readSysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"); ok && n == "1" {
			out = append(out, "user namespaces: AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1); "+
				"give polosd an AppArmor profile with the userns permission, or run sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
		}
	}
	return out
}

func readSysctl(path string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}
