package local_test

// The attacker suite of the confined local sandbox (ADR 0111): commands run
// through the provider, as an agent would run them, try to reach the
// daemon's network ports, environment, processes and files, and to outlive
// their timeout. Everything here uses real processes and the real kernel.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/local"
)

// helperEnv makes this test binary, run inside a sandbox, act as a small
// attack program (see runHelper) instead of running tests.
const helperEnv = "POLOS_LOCAL_TEST_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runHelper performs one attack step with direct system calls and prints
// what happened.
func runHelper(name string, args []string) int {
	switch name {
	case "dial":
		c, err := net.DialTimeout("tcp", args[0], 5*time.Second)
		if err != nil {
			fmt.Println("dial failed:", err)
			return 1
		}
		c.Close()
		fmt.Println("CONNECTED")
	case "ptrace":
		pid, _ := strconv.Atoi(args[0])
		if err := unix.PtraceAttach(pid); err != nil {
			fmt.Println("ptrace failed:", err)
			return 1
		}
		fmt.Println("ATTACHED")
	case "kill":
		pid, _ := strconv.Atoi(args[0])
		if err := unix.Kill(pid, 0); err != nil {
			fmt.Println("kill failed:", err)
			return 1
		}
		fmt.Println("SIGNALLED")
	case "check":
		// Run where user namespaces are exhausted: the confined provider must
		// refuse, naming why; the unsafe mode must still run commands.
		ctx := context.Background()
		fmt.Println("CHECK:", local.New().Check(ctx))
		p := local.NewWithOptions(local.Options{Confinement: local.ConfinementNone})
		sb, err := p.Create(ctx, sandbox.Spec{Provider: sandbox.ProviderLocal, Owner: "o", WorkspaceDir: args[0]})
		if err != nil {
			fmt.Println("UNSAFE CREATE:", err)
			return 1
		}
		res, err := sb.Exec(ctx, sandbox.ExecRequest{Command: "echo unsafe-ran"})
		fmt.Printf("UNSAFE EXEC: %q %v\n", res.Stdout, err)
	default:
		fmt.Println("unknown helper", name)
		return 2
	}
	return 0
}

// attackEnv is a confined sandbox with, next to its workspace, the things
// an attacker wants: a credentials file, a data directory, a listener on
// loopback, a secret in the daemon's environment.
type attackEnv struct {
	p        *local.Provider
	sb       sandbox.Sandbox
	ws       string
	creds    string // a secret file next to the workspace (polosd's creds directory)
	dataDir  string // stands for polosd's data directory
	home     string // the daemon user's real home
	nonce    string
	secret   string // the daemon's environment marker
	addr     string // a TCP listener on 127.0.0.1
	accepted atomic.Int32
	helper   string // this test binary, readable inside the sandbox
}

func newAttackEnv(t *testing.T) *attackEnv {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	e := &attackEnv{nonce: hex.EncodeToString(b)}
	e.secret = "daemon-secret-" + e.nonce
	t.Setenv("POLOS_ATTACK_MARKER", e.secret)
	base := t.TempDir()
	e.creds = filepath.Join(base, "creds", "nats.creds")
	e.dataDir = filepath.Join(base, "data")
	for _, d := range []string{filepath.Dir(e.creds), e.dataDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(e.creds, []byte("SECRET-CREDS-"+e.nonce+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.home, _ = os.UserHomeDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e.helper = exe
	e.p = local.NewWithOptions(local.Options{TmpRoot: filepath.Join(base, "sandbox-tmp"), ReadOnlyPaths: []string{filepath.Dir(exe)}})
	if err := e.p.Check(ctxFor(t)); err != nil {
		t.Fatalf("this machine must support confinement: %v", err)
	}
	e.sb, err = e.p.Create(ctxFor(t), sandbox.Spec{Provider: sandbox.ProviderLocal, Owner: "attacker", WorkspaceDir: filepath.Join(base, "ws")})
	if err != nil {
		t.Fatal(err)
	}
	e.ws = e.sb.Info().Workspace
	t.Cleanup(func() { _ = e.p.Destroy(context.Background(), e.sb.Info()) })

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	e.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			c.Close()
		}
	}()
	return e
}

func (e *attackEnv) exec(t *testing.T, req sandbox.ExecRequest) sandbox.ExecResult {
	t.Helper()
	if req.TimeoutSec == 0 {
		req.TimeoutSec = 60
	}
	res, err := e.sb.Exec(ctxFor(t), req)
	if err != nil {
		t.Fatalf("exec %q: %v", req.Command, err)
	}
	return res
}

// hostProcsWith lists host processes whose command line contains s.
func hostProcsWith(s string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		if _, err := strconv.Atoi(ent.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			out = append(out, ent.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// TestConfinedAttacks runs the attacks; each must fail, and the host is
// checked afterwards as well as the command's output.
func TestConfinedAttacks(t *testing.T) {
	e := newAttackEnv(t)
	passwd, _ := os.ReadFile("/etc/passwd")
	shadow, _ := os.ReadFile("/etc/shadow")
	hostTmp := "/tmp/polos-attack-" + e.nonce
	homeFile := filepath.Join(e.home, "polos-attack-"+e.nonce)
	for _, p := range []string{hostTmp, homeFile} {
		t.Cleanup(func() { os.Remove(p) })
	}
	if err := os.Symlink(e.dataDir, filepath.Join(e.ws, "link-data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(e.creds, filepath.Join(e.ws, "link-creds")); err != nil {
		t.Fatal(err)
	}
	port := strings.TrimPrefix(e.addr, "127.0.0.1:")
	hostPID := strconv.Itoa(os.Getpid())
	secretText := "SECRET-CREDS-" + e.nonce

	cases := []struct {
		name    string
		command string
		env     map[string]string
		// absent must not appear in stdout or stderr.
		absent []string
		// host checks what the command must not have changed.
		host func(t *testing.T)
	}{
		{name: "tcp connect to the daemon's loopback port (bash)",
			command: "bash -c 'exec 3<>/dev/tcp/127.0.0.1/" + port + " && echo CONNECTED'",
			absent:  []string{"CONNECTED"}},
		{name: "tcp connect to the daemon's loopback port (connect(2))",
			command: q(e.helper) + " " + e.addr, env: map[string]string{helperEnv: "dial"},
			absent: []string{"CONNECTED"}},
		{name: "tcp connect to the daemon's loopback port (node)",
			command: `command -v node >/dev/null || { echo "node: not installed"; exit 0; }; node -e 'require("net").connect(` + port + `,"127.0.0.1").on("connect",()=>{console.log("CONNECTED");process.exit(0)}).on("error",e=>{console.log("error",e.code);process.exit(3)})'`,
			absent:  []string{"CONNECTED"}},
		{name: "read the daemon's environment through /proc",
			command: `cat /proc/$PPID/environ /proc/1/environ /proc/` + hostPID + `/environ; for f in /proc/[0-9]*/environ; do cat "$f"; done; env`,
			absent:  []string{e.secret}},
		{name: "see the daemon's processes in /proc",
			command: `for p in /proc/[0-9]*; do printf '%s ' "$p"; tr '\0' ' ' < "$p/cmdline"; echo; done; ls /proc/` + hostPID,
			absent:  []string{e.helper, filepath.Base(os.Args[0]) + " -test"}},
		{name: "write outside the workspace",
			command: strings.Join([]string{
				"echo pwned > " + hostTmp, "echo pwned > " + q(homeFile), "echo pwned > " + q(e.dataDir+"/pwned"),
				"echo pwned > " + q(filepath.Dir(e.creds)+"/pwned"), "echo pwned >> /etc/passwd", "touch /usr/pwned /pwned /etc/pwned",
				"truncate -s 0 /etc/passwd", "mkdir /root/pwned",
			}, "; "),
			host: func(t *testing.T) {
				for _, f := range []string{hostTmp, homeFile, e.dataDir + "/pwned", filepath.Dir(e.creds) + "/pwned", "/usr/pwned", "/pwned", "/etc/pwned", "/root/pwned"} {
					if _, err := os.Lstat(f); err == nil {
						t.Errorf("the command created %s on the host", f)
					}
				}
				if now, _ := os.ReadFile("/etc/passwd"); string(now) != string(passwd) {
					t.Error("the command changed /etc/passwd")
				}
			}},
		{name: "write and read through symlinks planted in the workspace",
			command: "echo pwned > link-data/pwned; cat link-creds; echo pwned >> link-creds; ln -s " + q(e.dataDir) + " mine && echo pwned > mine/pwned2; ln -sf " + q(e.creds) + " mine2 && cat mine2",
			absent:  []string{secretText},
			host: func(t *testing.T) {
				for _, f := range []string{e.dataDir + "/pwned", e.dataDir + "/pwned2"} {
					if _, err := os.Lstat(f); err == nil {
						t.Errorf("a write through a symlink created %s", f)
					}
				}
				if b, _ := os.ReadFile(e.creds); string(b) != secretText+"\n" {
					t.Errorf("the creds file changed: %q", b)
				}
			}},
		{name: "write and read through hard links",
			command: "ln " + q(e.creds) + " hl && cat hl; echo pwned >> hl; ln /etc/passwd pw && echo pwned >> pw; ln /etc/shadow sh && cat sh",
			absent:  []string{secretText, "root:"},
			host: func(t *testing.T) {
				if b, _ := os.ReadFile(e.creds); string(b) != secretText+"\n" {
					t.Errorf("the creds file changed: %q", b)
				}
				if now, _ := os.ReadFile("/etc/passwd"); string(now) != string(passwd) {
					t.Error("the command changed /etc/passwd through a hard link")
				}
			}},
		{name: "read secret files outside the workspace",
			command: "cat " + q(e.creds) + "; ls " + q(filepath.Dir(e.creds)) + " | sed s/^/LISTED:/; cat /etc/shadow /etc/gshadow; ls /root " + q(e.home) + "; ls /etc/ssh",
			absent:  []string{secretText, "LISTED:nats.creds", "root:", "ssh_host_"}},
		{name: "escape through /proc/self/root and /proc/<pid>/cwd",
			command: "cat /proc/self/root" + q(e.creds) + " /proc/1/root" + q(e.creds) + " /proc/1/cwd/../creds/nats.creds /proc/self/cwd/../creds/nats.creds; ls /proc/self/root/; cat /proc/" + hostPID + "/root" + q(e.creds),
			absent:  []string{secretText}},
		{name: "ptrace and signal the daemon",
			command: q(e.helper) + " " + hostPID + "; POLOS_LOCAL_TEST_HELPER=kill " + q(e.helper) + " " + hostPID,
			env:     map[string]string{helperEnv: "ptrace"},
			absent:  []string{"ATTACHED", "SIGNALLED"}},
		{name: "mount",
			command: "mkdir -p m; mount -t tmpfs none m && echo MOUNTED; mount --bind / m && echo BOUND; mount -o remount,rw / && echo REMOUNTED; mount -t proc proc m && echo PROC",
			absent:  []string{"MOUNTED", "BOUND", "REMOUNTED", "PROC"}},
		{name: "unshare again and mount or chroot out",
			command: "unshare -Urm sh -c 'mount -t tmpfs none /tmp && echo MOUNTED; mount --bind / /mnt && echo BOUND; mount -o remount,rw / && echo REMOUNTED'; " +
				"unshare -Urmpf --mount-proc sh -c 'cat " + q(e.creds) + "; echo NESTED'; " +
				"unshare -Urn sh -c 'cat /proc/" + hostPID + "/environ'; " +
				"unshare -Um sh -c 'mount -t tmpfs none /tmp && echo MOUNTED; mount --bind / /mnt && echo BOUND; chroot / true && cat " + q(e.creds) + "'",
			absent: []string{"MOUNTED", "BOUND", "REMOUNTED", secretText, e.secret}},
		{name: "chroot",
			command: "chroot / true && echo CHROOTED; unshare -Ur sh -c 'mkdir -p x; chroot x /bin/true 2>&1; cd ../../../..; cat ." + q(e.creds) + "; cat " + q(e.creds) + "'",
			absent:  []string{"CHROOTED", secretText}},
		{name: "the host's unix sockets",
			command: "ls -la /run /var/run /run/docker.sock /var/run/docker.sock /run/dbus 2>&1; for s in /run/docker.sock /var/run/docker.sock; do test -S $s && echo SOCKET $s; done",
			absent:  []string{"SOCKET"}},
		{name: "keys and capabilities",
			command: "grep Cap /proc/self/status; cat /proc/sys/kernel/core_pattern; echo '|/tmp/x' > /proc/sys/kernel/core_pattern && echo CORE",
			absent:  []string{"CORE", "CapEff:\t000001ff", "CapEff:\t0000003f"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.accepted.Load()
			res := e.exec(t, sandbox.ExecRequest{Command: tc.command, Env: tc.env})
			out := res.Stdout + res.Stderr
			for _, a := range tc.absent {
				if strings.Contains(out, a) {
					t.Errorf("the attack worked: %q in the output:\n%s", a, out)
				}
			}
			if n := e.accepted.Load() - before; n != 0 {
				t.Errorf("the listener on %s accepted %d connection(s) from the sandbox", e.addr, n)
			}
			if tc.host != nil {
				tc.host(t)
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("exit %d, output:\n%s", res.ExitCode, out)
			}
		})
	}
	_ = shadow
}

// TestConfinedNetworkCapability: with the network capability the same
// connect succeeds.
func TestConfinedNetworkCapability(t *testing.T) {
	e := newAttackEnv(t)
	res := e.exec(t, sandbox.ExecRequest{Command: q(e.helper) + " " + e.addr, Env: map[string]string{helperEnv: "dial"}, Network: true})
	if !strings.Contains(res.Stdout, "CONNECTED") {
		t.Fatalf("with the network capability the connect failed: %+v", res)
	}
	testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if e.accepted.Load() == 0 {
			return fmt.Errorf("no connection accepted")
		}
		return nil
	})
	// Without it, loopback works inside the sandbox's own namespace.
	res = e.exec(t, sandbox.ExecRequest{Command: `python3 -c 'print(1)' >/dev/null 2>&1; bash -c 'exec 3<>/dev/tcp/127.0.0.1/` + strings.TrimPrefix(e.addr, "127.0.0.1:") + `' 2>&1 || echo REFUSED`})
	if !strings.Contains(res.Stdout, "REFUSED") {
		t.Errorf("without the network capability: %+v", res)
	}
}

// TestConfinedChildrenDie: detached children (setsid, nohup, double fork,
// node's detached spawn) die when the command's shell exits or times out;
// the host's process table is checked right after exec returns.
func TestConfinedChildrenDie(t *testing.T) {
	e := newAttackEnv(t)
	cases := []struct {
		name    string
		command string
		timeout int
	}{
		{"setsid, timed out", "setsid sh -c 'sleep 1000 # %s' & sleep 1000", 1},
		{"nohup, timed out", "nohup sh -c 'sleep 1000 # %s' >/dev/null 2>&1 & sleep 1000", 1},
		{"double fork, timed out", "( sh -c 'sleep 1000 # %s' & ) ; sleep 1000", 1},
		{"setsid, shell exits", "setsid sh -c 'sleep 1000 # %s' >/dev/null 2>&1 & echo started", 60},
		{"double fork holding stdout, shell exits", "( sh -c 'sleep 1000 # %s' & ) ; echo started", 60},
		{"node detached spawn, shell exits",
			`command -v node >/dev/null || exit 0; node -e 'require("child_process").spawn("sh",["-c","sleep 1000 # %s"],{detached:true,stdio:"ignore"}).unref()'`, 60},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mark := fmt.Sprintf("child-%s-%d", e.nonce, i)
			start := time.Now()
			res := e.exec(t, sandbox.ExecRequest{Command: fmt.Sprintf(tc.command, mark), TimeoutSec: tc.timeout})
			if el := time.Since(start); el > 30*time.Second {
				t.Errorf("exec took %v", el)
			}
			if tc.timeout == 1 && !res.TimedOut {
				t.Errorf("exec did not time out: %+v", res)
			}
			if left := hostProcsWith(mark); len(left) > 0 {
				t.Errorf("processes outlived the command: %q", left)
			}
		})
	}
}

// TestConfinedDestroyKillsRunning: Destroy kills a running command and
// everything it started, and removes the private /tmp.
func TestConfinedDestroyKillsRunning(t *testing.T) {
	e := newAttackEnv(t)
	mark := "destroy-" + e.nonce
	e.exec(t, sandbox.ExecRequest{Command: "echo keep > /tmp/f"})
	var wg sync.WaitGroup
	wg.Add(1)
	var res sandbox.ExecResult
	var execErr error
	go func() {
		defer wg.Done()
		res, execErr = e.sb.Exec(context.Background(), sandbox.ExecRequest{Command: "setsid sh -c 'sleep 1000 # " + mark + "' & sleep 1000", TimeoutSec: 600})
	}()
	testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if len(hostProcsWith(mark)) == 0 {
			return fmt.Errorf("the command's child is not running yet")
		}
		return nil
	})
	if err := e.p.Destroy(ctxFor(t), e.sb.Info()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	// Killed (exit -1), or refused because the sandbox is gone: both end
	// the command; a clean exit would mean Destroy did not kill it.
	if execErr == nil && res.ExitCode != -1 {
		t.Errorf("exec killed by Destroy = %+v", res)
	}
	if left := hostProcsWith(mark); len(left) > 0 {
		t.Errorf("processes outlived Destroy: %q", left)
	}
	// The private /tmp went with the sandbox; the workspace stays.
	if got := e.exec(t, sandbox.ExecRequest{Command: "cat /tmp/f 2>/dev/null || echo gone"}).Stdout; got != "gone\n" {
		t.Errorf("private /tmp after Destroy: %q", got)
	}
	if _, err := os.Stat(e.ws); err != nil {
		t.Errorf("Destroy removed the workspace: %v", err)
	}
}

// TestConfinedPrivateTmp: /tmp persists across execs of one sandbox, is
// not the host's /tmp, and differs between sandboxes.
func TestConfinedPrivateTmp(t *testing.T) {
	e := newAttackEnv(t)
	e.exec(t, sandbox.ExecRequest{Command: "echo one > /tmp/shared-" + e.nonce})
	if got := e.exec(t, sandbox.ExecRequest{Command: "cat /tmp/shared-" + e.nonce}).Stdout; got != "one\n" {
		t.Errorf("/tmp did not persist between execs: %q", got)
	}
	if _, err := os.Stat("/tmp/shared-" + e.nonce); err == nil {
		t.Error("the sandbox's /tmp is the host's")
	}
	other, err := e.p.Create(ctxFor(t), sandbox.Spec{Provider: sandbox.ProviderLocal, Owner: "other", WorkspaceDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := other.Exec(ctxFor(t), sandbox.ExecRequest{Command: "cat /tmp/shared-" + e.nonce + " 2>/dev/null || echo absent"})
	if err != nil || res.Stdout != "absent\n" {
		t.Errorf("another sandbox sees this one's /tmp: %+v %v", res, err)
	}
}

// TestConfinedNodeHello is the e2e demo's path: node from /usr/bin runs a
// script in the workspace, with HOME (npm's caches) being the workspace.
func TestConfinedNodeHello(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed (the e2e demo needs it; .ci/run installs it)")
	}
	e := newAttackEnv(t)
	if _, err := e.sb.Write(ctxFor(t), sandbox.WriteRequest{Path: "hello.js", Content: "console.log('hello from ' + process.version)\n"}); err != nil {
		t.Fatal(err)
	}
	res := e.exec(t, sandbox.ExecRequest{Command: "node hello.js"})
	if res.ExitCode != 0 || !strings.HasPrefix(res.Stdout, "hello from v") {
		t.Fatalf("node hello.js = %+v", res)
	}
}

// TestConfinedSystemReadable: the system directories are readable and
// their programs run; /etc is there without its secrets.
func TestConfinedSystemReadable(t *testing.T) {
	e := newAttackEnv(t)
	res := e.exec(t, sandbox.ExecRequest{Command: "cat /etc/passwd >/dev/null && ls /usr/bin >/dev/null && test -c /dev/null && head -c 4 /dev/urandom | wc -c && wc -c < /etc/shadow; id -u; echo $HOME; pwd"})
	want := fmt.Sprintf("4\n0\n%d\n%s\n%s\n", os.Getuid(), e.ws, e.ws)
	if _, err := os.Stat("/etc/shadow"); err != nil {
		want = strings.Replace(want, "4\n0\n", "4\n", 1)
	}
	if res.Stdout != want {
		t.Errorf("got %q (stderr %q), want %q", res.Stdout, res.Stderr, want)
	}
}

// TestUnconfinedMode: ConfinementNone runs commands on the host (the
// unsafe mode), says so in Info, and its Destroy kills process groups.
func TestUnconfinedMode(t *testing.T) {
	p := local.NewWithOptions(local.Options{Confinement: local.ConfinementNone})
	sb, _ := create(t, p)
	if got := sb.Info().Confinement; got != sandbox.ConfinementNone {
		t.Errorf("Info.Confinement = %q, want %q", got, sandbox.ConfinementNone)
	}
	res := run(t, sb, sandbox.ExecRequest{Command: "echo $$ > /dev/null; ls /proc/" + strconv.Itoa(os.Getpid()) + " >/dev/null && echo HOST"})
	if res.Stdout != "HOST\n" {
		t.Errorf("unconfined exec does not see the host: %+v", res)
	}
	if c := local.New(); c.Confinement() != local.InfoConfined {
		t.Errorf("default provider confinement = %q", c.Confinement())
	}
	if err := local.NewWithOptions(local.Options{Confinement: "maybe"}).Check(ctxFor(t)); perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Errorf("unknown confinement mode: %v", err)
	}
}

// TestTmpRootRefused: a tmp root another user could reach is refused.
func TestTmpRootRefused(t *testing.T) {
	root := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(root, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o777); err != nil {
		t.Fatal(err)
	}
	p := local.NewWithOptions(local.Options{TmpRoot: root})
	_, err := p.Create(ctxFor(t), sandbox.Spec{Provider: sandbox.ProviderLocal, Owner: "o", WorkspaceDir: t.TempDir()})
	if perr.CodeOf(err) != sandbox.CodeProvider || !strings.Contains(err.Error(), "0700") {
		t.Errorf("world-writable tmp root: %v", err)
	}
	_ = syscall.Getuid
}

// TestRefusesWithoutUserNamespaces: in a user namespace whose
// user.max_user_namespaces is 0, the provider refuses to confine, and the
// error names the sysctl, its fix and the unsafe mode.
func TestRefusesWithoutUserNamespaces(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--user", "--map-root-user", "sh", "-c",
		`echo 0 > /proc/sys/user/max_user_namespaces && exec "$0" "$1"`, exe, t.TempDir())
	cmd.Env = append(os.Environ(), helperEnv+"=check", "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"SANDBOX_CONFINEMENT_UNAVAILABLE", "user.max_user_namespaces is 0", "sysctl -w user.max_user_namespaces",
		"server.sandbox_local_confinement: none", "--sandbox-local-confinement=none", `UNSAFE EXEC: "unsafe-ran\n" <nil>`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
