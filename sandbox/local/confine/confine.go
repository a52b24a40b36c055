// Package confine runs one shell command of a local sandbox inside Linux
// namespaces and a Landlock domain (ADR 0111). It is pure Go: nothing needs
// to be installed.
//
// The parent (polosd, or any program using package local) starts its own
// binary again, through /proc/self/exe, in new user, PID, mount, IPC and
// UTS namespaces (and a network namespace unless the command was given the
// network capability). This package's init function recognises that
// re-exec by its argv[0] (InitArg0) before main or TestMain runs, so every
// binary that links package local, test binaries included, can be the
// sandbox's init without any call from main. The init, PID 1 of the new PID
// namespace:
//
//  1. builds a new root on a tmpfs: read-only bind mounts of the system
//     directories (SystemDirs), /etc with its secrets masked (EtcSecrets),
//     a few device nodes (Devices), a fresh /proc of the new PID namespace
//     (with /proc/sys and friends read-only), the workspace and a private
//     /tmp read-write, an empty /dev/shm; then pivot_root into it and
//     detaches the host's root, so nothing else of the host file system is
//     reachable by any path;
//  2. brings up the loopback interface of the new network namespace;
//  3. applies a Landlock ruleset (reads of the system directories, writes
//     only in the workspace, /tmp and /dev/shm; with Landlock ABI 6 or
//     newer also no signals and no abstract unix sockets outside the
//     sandbox), sets no_new_privs and drops every capability, on the one
//     OS thread that then
//  4. execs /bin/sh -c COMMAND, which becomes PID 1 of the namespace.
//
// When that PID 1 exits, or is killed (timeout, cancellation, Destroy), the
// kernel kills every other process of the namespace: background children,
// setsid'd and double-forked ones included. Nothing a command starts
// outlives it.
//
// A setup failure is written to the error pipe (fd 3) and the init exits
// with ExitSetupFailed; the pipe is close-on-exec, so a successful exec of
// the shell closes it with nothing written.
package confine

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// InitArg0 is the argv[0] by which the init is recognised.
const InitArg0 = "polos-sandbox-init"

// ExitSetupFailed is the init's exit status when it could not build the
// sandbox (the reason is on the error pipe).
const ExitSetupFailed = 125

// MinLandlockABI is the oldest Landlock ABI the confinement accepts: ABI 1
// refuses every rename or link across directories (git, npm and mv break),
// ABI 2 (Linux 5.19) allows them within the writable trees.
const MinLandlockABI = 2

// ScopedLandlockABI is the first ABI that scopes signals and abstract unix
// sockets (Linux 6.12). Below it, a command with the network capability
// shares the host's network namespace and so can reach the host's
// abstract unix sockets.
const ScopedLandlockABI = 6

// Shell runs the command as Shell -c COMMAND.
const Shell = "/bin/sh"

// SetupTimeout bounds how long the parent waits for the init to report
// that the shell started (it normally takes milliseconds).
const SetupTimeout = 30 * time.Second

// SystemDirs are bound read-only at the same path when they exist (a
// symlink, as /bin is on merged-/usr systems, is recreated as the same
// symlink). Everything else of the host is absent from the sandbox.
var SystemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"}

// EtcSecrets are masked inside the sandbox's /etc (globs, relative to
// /etc): a file is replaced by an empty one, a directory by an empty
// directory. They hold password hashes, host keys, private keys, VPN and
// Wi-Fi secrets, credentials and sudo rules.
var EtcSecrets = []string{
	"shadow", "shadow-", "gshadow", "gshadow-", "security/opasswd",
	"sudoers", "sudoers.d",
	"ssh/ssh_host_*_key", "ssh/ssh_host_*_key.pub",
	"ssl/private", "pki/tls/private", "letsencrypt",
	"krb5.keytab", "ipsec.secrets", "ipsec.d/private",
	"ppp/chap-secrets", "ppp/pap-secrets",
	"wireguard", "openvpn", "NetworkManager/system-connections", "wpa_supplicant",
	"credstore", "credstore.encrypted",
	"docker/key.json", "docker/certs.d", "containerd/certs.d",
	"polos",
}

// Devices are the device nodes bound into the sandbox's /dev. /dev/fd,
// /dev/stdin, /dev/stdout and /dev/stderr are symlinks into /proc/self/fd.
var Devices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}

// Config is what the parent tells the init; it travels as JSON in argv[1].
// It holds no secret: the command's environment is already scrubbed.
type Config struct {
	Workspace string   `json:"workspace"` // host path, bound read-write at the same path
	Tmp       string   `json:"tmp"`       // host directory bound read-write at /tmp
	Cwd       string   `json:"cwd"`       // absolute, inside the workspace
	Command   string   `json:"command"`
	Env       []string `json:"env"`
	Network   bool     `json:"network,omitempty"` // share the host's network namespace
	// ReadOnly are more host directories to bind read-only (beside
	// SystemDirs), e.g. /opt where a toolchain lives.
	ReadOnly []string `json:"read_only,omitempty"`
	// Probe builds the whole sandbox and exits 0 instead of running a
	// command: the provider's start-up check.
	Probe bool `json:"probe,omitempty"`
}

// CheckWorkspace refuses workspaces that would expose the host: the root
// directory, or anything under /proc, /sys or /dev.
func CheckWorkspace(ws string) error {
	clean := filepath.Clean(ws)
	if !filepath.IsAbs(clean) || clean == "/" {
		return fmt.Errorf("the workspace %q must be an absolute directory other than /", ws)
	}
	for _, bad := range []string{"/proc", "/sys", "/dev"} {
		if clean == bad || strings.HasPrefix(clean, bad+"/") {
			return fmt.Errorf("the workspace %q may not be under %s", ws, bad)
		}
	}
	return nil
}
