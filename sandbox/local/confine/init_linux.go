package confine

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// errPipeFD is the init's error pipe: ExtraFiles[0] of the parent's command.
const errPipeFD = 3

// init turns this process into the sandbox's init when it was started as
// one (argv[0] == InitArg0). It runs before main and before TestMain, in
// every binary that links this package, and never returns then.
func init() {
	if len(os.Args) != 2 || os.Args[0] != InitArg0 {
		return
	}
	// Every per-thread step (capabilities, no_new_privs, Landlock) happens on
	// this thread, which then calls execve: the shell inherits exactly its
	// credentials. It is never unlocked.
	runtime.LockOSThread()
	err := runInit(os.Args[1])
	// Only a failure gets here.
	msg := "sandbox init failed"
	if err != nil {
		msg = err.Error()
	}
	_, _ = unix.Write(errPipeFD, []byte(msg))
	os.Exit(ExitSetupFailed)
}

// step names a failed setup step in the error the parent reports.
func step(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

func runInit(arg string) error {
	// The error pipe must not reach the shell.
	if _, err := unix.FcntlInt(errPipeFD, unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return step("mark the error pipe close-on-exec", err)
	}
	var cfg Config
	if err := json.Unmarshal([]byte(arg), &cfg); err != nil {
		return step("decode the sandbox config", err)
	}
	p, err := buildRoot(&cfg)
	if err != nil {
		return err
	}
	if !cfg.Network {
		if err := loopbackUp(); err != nil {
			return step("bring up the loopback interface", err)
		}
	}
	// A fresh, empty session keyring: the daemon's keys are not reachable.
	if _, _, e := unix.RawSyscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); e != 0 && e != unix.ENOSYS {
		return step("join a new session keyring", e)
	}
	cwd := cfg.Cwd
	if cwd == "" {
		cwd = cfg.Workspace
	}
	if err := unix.Chdir(cwd); err != nil {
		return step("enter the working directory "+cwd, err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return step("set no_new_privs", err)
	}
	abi, err := LandlockABI()
	if err != nil {
		return step("query Landlock", err)
	}
	if err := restrictLandlock(abi, landlockRules(&cfg, p)); err != nil {
		return step("apply the Landlock ruleset", err)
	}
	if err := dropCapabilities(); err != nil {
		return step("drop capabilities", err)
	}
	if cfg.Probe {
		os.Exit(0)
	}
	argv := []string{Shell, "-c", cfg.Command}
	return step("exec "+Shell, syscall.Exec(Shell, argv, cfg.Env))
}

// loopbackUp sets IFF_UP on "lo" of the new network namespace, so a
// command can talk to servers it starts itself on 127.0.0.1.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// dropCapabilities empties the bounding set (so exec cannot regain
// capabilities, not even as uid 0), the ambient set and the thread's
// effective, permitted and inheritable sets.
func dropCapabilities() error {
	for c := 0; c < 64; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if err == unix.EINVAL { // past the last capability this kernel knows
				break
			}
			return step(fmt.Sprintf("drop capability %d from the bounding set", c), err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return step("clear ambient capabilities", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	return step("clear capability sets", unix.Capset(&hdr, &data[0]))
}
