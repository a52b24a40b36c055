package docker

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/polos-run/polos/images"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestContainerIsHardened(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	spec := testSpec(t)
	spec.Memory, spec.CPUs, spec.PidsLimit, spec.Scope = "512m", 0.5, 100, ScopeSession
	spec.Env = map[string]string{"GREETING": "hello world"}
	b := newBackend(t, p, spec)

	ins, err := testClient.ContainerInspect(ctx, b.Info().ID)
	if err != nil {
		t.Fatal(err)
	}
	hc := ins.HostConfig
	if hc.Memory != 512<<20 || hc.MemorySwap != 512<<20 {
		t.Errorf("Memory=%d MemorySwap=%d, want %d", hc.Memory, hc.MemorySwap, 512<<20)
	}
	if hc.NanoCPUs != 5e8 {
		t.Errorf("NanoCPUs=%d, want 5e8", hc.NanoCPUs)
	}
	if hc.PidsLimit == nil || *hc.PidsLimit != 100 {
		t.Errorf("PidsLimit=%v, want 100", hc.PidsLimit)
	}
	if !slices.Equal(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 {
		t.Errorf("CapDrop=%v CapAdd=%v", hc.CapDrop, hc.CapAdd)
	}
	if !slices.Contains(hc.SecurityOpt, "no-new-privileges") {
		t.Errorf("SecurityOpt=%v", hc.SecurityOpt)
	}
	if !hc.ReadonlyRootfs || hc.NetworkMode != "none" || hc.Privileged {
		t.Errorf("ReadonlyRootfs=%v NetworkMode=%q Privileged=%v", hc.ReadonlyRootfs, hc.NetworkMode, hc.Privileged)
	}
	if hc.Init == nil || !*hc.Init {
		t.Errorf("Init=%v, want true", hc.Init)
	}
	if ins.Config.User != DefaultUser {
		t.Errorf("User=%q, want %q", ins.Config.User, DefaultUser)
	}
	want := map[string]string{LabelManaged: "true", LabelOwner: spec.Owner, LabelScope: ScopeSession, LabelHost: testHostID}
	for k, v := range want {
		if ins.Config.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, ins.Config.Labels[k], v)
		}
	}

	// The same, seen from inside.
	out := mustExec(t, b, `id -u; id -g; grep -E '^(NoNewPrivs|CapEff):' /proc/self/status; ls /sys/class/net; echo "$GREETING"; pwd`)
	for _, w := range []string{"1000\n1000\n", "NoNewPrivs:\t1", "CapEff:\t0000000000000000", "lo\n", "hello world\n", "/workspace\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("inside the container: missing %q in\n%s", w, out)
		}
	}
	if strings.Contains(out, "eth0") {
		t.Errorf("network none, but the container has eth0:\n%s", out)
	}
	res, err := b.Exec(ctx, sandbox.ExecRequest{Command: "touch /etc/x || touch /x"})
	if err != nil || res.ExitCode == 0 {
		t.Errorf("root filesystem is writable: %+v %v", res, err)
	}
	if got := mustExec(t, b, "touch /tmp/ok /workspace/ok && echo ok"); got != "ok\n" {
		t.Errorf("/tmp and /workspace must be writable: %q", got)
	}
}

func TestBridgeNetworkOnRequest(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	spec := testSpec(t)
	spec.Network = NetworkBridge
	b := newBackend(t, p, spec)
	ins, err := testClient.ContainerInspect(ctx, b.Info().ID)
	if err != nil {
		t.Fatal(err)
	}
	if ins.HostConfig.NetworkMode != NetworkBridge {
		t.Errorf("NetworkMode=%q, want bridge", ins.HostConfig.NetworkMode)
	}
	if out := mustExec(t, b, "ls /sys/class/net"); !strings.Contains(out, "eth0") {
		t.Errorf("bridge network without eth0: %q", out)
	}
}

// An agent's symlink inside the container must resolve inside the container,
// even though the workspace is a bind mount of a host directory: with
// AllowPathsOutsideWorkspace, `ln -s /etc/passwd x` then read x gives the
// CONTAINER's /etc/passwd (the one of the busybox image), never the host's.
func TestSymlinksResolveInsideTheContainer(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{AllowPathsOutsideWorkspace: true})
	spec := testSpec(t)
	spec.WorkspaceDir = hostWorkspace(t)
	b := newBackend(t, p, spec)

	hostPasswd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(secret, []byte("host secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustExec(t, b, "ln -s /etc/passwd x && ln -s /etc d && ln -s "+secret+" s && mkdir -p sub && ln -s ../.. sub/up")

	for _, path := range []string{"x", "d/passwd", "/workspace/x", "../etc/passwd", "sub/up/etc/passwd", "/etc/passwd"} {
		got, err := b.ReadFile(ctx, path, sandbox.MaxReadFileBytes)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		if !bytes.Contains(got, []byte("polos:x:1000:1000:polos sandbox")) || bytes.Equal(got, hostPasswd) {
			t.Errorf("read %s returned a file that is not the container's /etc/passwd:\n%s", path, got)
		}
	}
	// A link to a host path names nothing inside the container.
	if _, err := b.ReadFile(ctx, "s", 1000); perr.CodeOf(err) != sandbox.CodeNotFound {
		t.Errorf("read of a link to the host path %s: want %s, got %v", secret, sandbox.CodeNotFound, err)
	}
	// Writing through a link to the container's /etc fails; the host is untouched.
	if err := b.WriteFile(ctx, "x", []byte("owned\n")); perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Errorf("write through a link to /etc/passwd: want %s, got %v", sandbox.CodeBadRequest, err)
	}
	if now, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(now, hostPasswd) {
		t.Fatal("host /etc/passwd changed")
	}
	// Walk reports links without following them.
	var seen []string
	err = b.Walk(ctx, "", func(rel string, isDir bool) error {
		seen = append(seen, rel+map[bool]string{true: "/", false: ""}[isDir])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"d", "s", "sub/", "sub/up", "x"}; !slices.Equal(seen, want) {
		t.Errorf("walk = %v, want %v", seen, want)
	}
}

// By default the same links are refused: paths and their symlinks must stay
// in the workspace. Links are still resolved inside the container: a link
// to an absolute container path under /workspace works (that path does not
// exist on the host), and one to the workspace's host path does not.
func TestSymlinksOutOfTheWorkspaceAreRefused(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	spec := testSpec(t)
	spec.WorkspaceDir = hostWorkspace(t)
	b := newBackend(t, p, spec)
	mustExec(t, b, "ln -s /etc/passwd x && ln -s /etc d && ln -s "+spec.WorkspaceDir+"/real.txt host && "+
		"echo real > real.txt && ln -s /workspace/real.txt abs && mkdir sub && ln -s ../real.txt sub/rel")

	for _, path := range []string{"x", "d/passwd", "d", "../etc/passwd", "/etc/passwd", "x/new", "d/new/file"} {
		if _, err := b.ReadFile(ctx, path, 100); perr.CodeOf(err) != sandbox.CodeOutsideWorkspace {
			t.Errorf("read %s: want %s, got %v", path, sandbox.CodeOutsideWorkspace, err)
		}
		if err := b.WriteFile(ctx, path, []byte("x")); perr.CodeOf(err) != sandbox.CodeOutsideWorkspace {
			t.Errorf("write %s: want %s, got %v", path, sandbox.CodeOutsideWorkspace, err)
		}
	}
	if err := b.Walk(ctx, "d", func(string, bool) error { return nil }); perr.CodeOf(err) != sandbox.CodeOutsideWorkspace {
		t.Errorf("walk d: %v", err)
	}
	if _, err := b.Exec(ctx, sandbox.ExecRequest{Command: "pwd", Cwd: "d"}); perr.CodeOf(err) != sandbox.CodeOutsideWorkspace {
		t.Errorf("exec in d: %v", err)
	}
	for _, path := range []string{"abs", "sub/rel"} {
		if got, err := b.ReadFile(ctx, path, 100); err != nil || string(got) != "real\n" {
			t.Errorf("read %s: %q %v", path, got, err)
		}
	}
	if _, err := b.ReadFile(ctx, "host", 100); err == nil {
		t.Errorf("a link to the workspace's host path was resolved on the host")
	}
}

func TestFilePrimitives(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	dir := hostWorkspace(t)
	spec := testSpec(t)
	spec.WorkspaceDir = dir
	b := newBackend(t, p, spec)

	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	hostile := []string{"a/b/c/bytes.bin", "-rf", "sp ace/$(id)/`x`;rm -rf *", "new\nline", "--help"}
	for _, name := range hostile {
		if err := b.WriteFile(ctx, name, all); err != nil {
			t.Fatalf("write %q: %v", name, err)
		}
		got, err := b.ReadFile(ctx, name, 1000)
		if err != nil || !bytes.Equal(got, all) {
			t.Fatalf("read %q: %v %q", name, err, got)
		}
		onHost, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(onHost, all) {
			t.Errorf("host view of %q: %v", name, err)
		}
	}
	// Overwrite truncates; an empty file is fine.
	if err := b.WriteFile(ctx, "a/b/c/bytes.bin", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := b.ReadFile(ctx, "a/b/c/bytes.bin", 10); err != nil || len(got) != 0 {
		t.Errorf("after truncation: %q %v", got, err)
	}
	// At most maxBytes+1 bytes.
	if got, err := b.ReadFile(ctx, "-rf", 10); err != nil || len(got) != 11 {
		t.Errorf("capped read: %d bytes, %v", len(got), err)
	}
	mustExec(t, b, "mkfifo fifo")
	for path, code := range map[string]perr.Code{
		"missing.txt":   sandbox.CodeNotFound,
		"a/b":           sandbox.CodeBadRequest,
		"fifo":          sandbox.CodeBadRequest,
		"/dev/zero":     sandbox.CodeOutsideWorkspace,
		"../etc/passwd": sandbox.CodeOutsideWorkspace,
		"nul\x00byte":   sandbox.CodeBadRequest,
	} {
		if _, err := b.ReadFile(ctx, path, 100); perr.CodeOf(err) != code {
			t.Errorf("read %q: want %s, got %v", path, code, err)
		}
	}
	for path, code := range map[string]perr.Code{
		"a/b":            sandbox.CodeBadRequest, // a directory
		"fifo":           sandbox.CodeBadRequest,
		"/etc/new":       sandbox.CodeOutsideWorkspace,
		"-rf/under/file": sandbox.CodeBadRequest, // parent is a file
	} {
		if err := b.WriteFile(ctx, path, []byte("x")); perr.CodeOf(err) != code {
			t.Errorf("write %q: want %s, got %v", path, code, err)
		}
	}

	// Walk order and SkipDir, like filepath.WalkDir.
	var seen []string
	err := b.Walk(ctx, "", func(rel string, isDir bool) error {
		seen = append(seen, rel)
		if rel == "sp ace" {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--help", "-rf", "a", "a/b", "a/b/c", "a/b/c/bytes.bin", "fifo", "new\nline", "sp ace"}
	if !slices.Equal(seen, want) {
		t.Errorf("walk = %q\nwant   %q", seen, want)
	}
	seen = nil
	if err := b.Walk(ctx, "/workspace/a", func(rel string, isDir bool) error { seen = append(seen, rel); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"b", "b/c", "b/c/bytes.bin"}; !slices.Equal(seen, want) {
		t.Errorf("walk a = %q, want %q", seen, want)
	}
	if err := b.Walk(ctx, "nope", func(string, bool) error { return nil }); perr.CodeOf(err) != sandbox.CodeNotFound {
		t.Errorf("walk of a missing dir: %v", err)
	}
	if err := b.Walk(ctx, "-rf", func(string, bool) error { return nil }); perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Errorf("walk of a file: %v", err)
	}
	stop := errors.New("stop")
	if err := b.Walk(ctx, "", func(string, bool) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("walk must return fn's error, got %v", err)
	}
}

func TestExec(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	b := newBackend(t, p, testSpec(t))
	mustExec(t, b, "mkdir -p 'sub dir'")

	cases := []struct {
		name string
		req  sandbox.ExecRequest
		out  string
		err  string
		code int
	}{
		{"exit code and stderr", sandbox.ExecRequest{Command: "echo out; echo err >&2; exit 7"}, "out\n", "err\n", 7},
		{"shell syntax is the agent's", sandbox.ExecRequest{Command: "echo \"$(id -u)\" '$HOME' `echo bq`; echo a | tr a b"}, "1000 $HOME bq\nb\n", "", 0},
		{"relative cwd", sandbox.ExecRequest{Command: "pwd", Cwd: "sub dir"}, "/workspace/sub dir\n", "", 0},
		{"absolute cwd", sandbox.ExecRequest{Command: "pwd", Cwd: "/workspace/sub dir"}, "/workspace/sub dir\n", "", 0},
		{"env values are data", sandbox.ExecRequest{Command: `printf '%s' "$V"`, Env: map[string]string{"V": "$(touch /tmp/pwned); `id`"}}, "$(touch /tmp/pwned); `id`", "", 0},
		// PATH and LD_PRELOAD reach the command, not the wrapper: its cat,
		// rm and setsid still work, so the output comes back.
		{"hostile PATH and LD_PRELOAD", sandbox.ExecRequest{Command: `echo "$PATH"; echo "$LD_PRELOAD"; no-such-tool`, Env: map[string]string{"PATH": "/workspace/evil", "LD_PRELOAD": "/workspace/evil.so"}},
			"/workspace/evil\n/workspace/evil.so\n", "/bin/sh: no-such-tool: not found\n", 127},
		{"no stdin", sandbox.ExecRequest{Command: "cat; echo done"}, "done\n", "", 0},
	}
	for _, c := range cases {
		res, err := b.Exec(ctx, c.req)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if res.Stdout != c.out || res.Stderr != c.err || res.ExitCode != c.code || res.TimedOut {
			t.Errorf("%s: got %+v, want stdout %q stderr %q exit %d", c.name, res, c.out, c.err, c.code)
		}
	}
	if got := mustExec(t, b, "ls /tmp/pwned 2>&1 || true"); !strings.Contains(got, "No such file") {
		t.Errorf("an env value was executed: %q", got)
	}
	for _, req := range []sandbox.ExecRequest{
		{Command: "true", Cwd: "nope"},
	} {
		if _, err := b.Exec(ctx, req); perr.CodeOf(err) != sandbox.CodeNotFound {
			t.Errorf("%+v: want %s, got %v", req, sandbox.CodeNotFound, err)
		}
	}
	for _, req := range []sandbox.ExecRequest{
		{Command: "  "},
		{Command: "echo \x00"},
		{Command: "true", Env: map[string]string{"A=B": "x"}},
		{Command: "true", Env: map[string]string{"-i": "x"}},
	} {
		if _, err := b.Exec(ctx, req); perr.CodeOf(err) != sandbox.CodeBadRequest {
			t.Errorf("%+v: want %s, got %v", req, sandbox.CodeBadRequest, err)
		}
	}
}

// A background child keeping stdout open must not hold the exec: it returns
// when the shell returns.
func TestExecReturnsWhenTheShellReturns(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	b := newBackend(t, p, testSpec(t))
	start := time.Now()
	res, err := b.Exec(ctx, sandbox.ExecRequest{Command: "sleep 1000 & echo started", TimeoutSec: 100})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || res.Stdout != "started\n" || res.TimedOut {
		t.Fatalf("got %+v", res)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Fatalf("exec waited %v for a background child", d)
	}
}

// A timeout kills the whole process group inside the container, background
// children included.
func TestExecTimeoutKillsTheProcessGroup(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	b := newBackend(t, p, testSpec(t))
	res, err := b.Exec(ctx, sandbox.ExecRequest{Command: "sleep 1000 & sleep 1001 & echo partial; sleep 1002", TimeoutSec: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || res.ExitCode != -1 || res.Stdout != "partial\n" {
		t.Fatalf("got %+v, want a timeout with the partial output", res)
	}
	checkFor(t, 30*time.Second, "no sleep 100x left in the container", func() bool {
		return !strings.Contains(mustExec(t, b, "ps -o pid,args"), "sleep 100")
	})
	// The sandbox still works.
	if got := mustExec(t, b, "echo alive"); got != "alive\n" {
		t.Fatalf("after timeout: %q", got)
	}
}

func TestExecCancelKillsTheCommand(t *testing.T) {
	t.Parallel()
	p := newTestProvider(t, Options{})
	b := newBackend(t, p, testSpec(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan sandbox.ExecResult, 1)
	go func() {
		res, _ := b.Exec(ctx, sandbox.ExecRequest{Command: "echo go; sleep 1003", TimeoutSec: 600})
		done <- res
	}()
	checkFor(t, 60*time.Second, "the command to run", func() bool {
		return strings.Contains(mustExec(t, b, "ps -o args"), "sleep 1003")
	})
	cancel()
	select {
	case res := <-done:
		if !res.TimedOut || res.ExitCode != -1 {
			t.Errorf("cancelled exec: %+v", res)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("cancelled exec did not return")
	}
	checkFor(t, 30*time.Second, "sleep 1003 gone", func() bool {
		return !strings.Contains(mustExec(t, b, "ps -o args"), "sleep 1003")
	})
}

func TestExecOutputIsBounded(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	b := newBackend(t, p, testSpec(t))
	res, err := b.Exec(ctx, sandbox.ExecRequest{Command: "echo FIRST; yes | head -c 3000000; echo; echo LAST"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Truncated || len(res.Stdout) > sandbox.MaxExecOutputChars || !strings.HasPrefix(res.Stdout, "FIRST\ny\n") || !strings.HasSuffix(res.Stdout, "y\n\nLAST\n") {
		t.Errorf("truncated=%v len=%d head=%q tail=%q", res.Truncated, len(res.Stdout), res.Stdout[:20], res.Stdout[len(res.Stdout)-20:])
	}
}

func TestTmpfsWorkspaceWithoutWorkspaceDir(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	b := newBackend(t, p, testSpec(t))
	if err := b.WriteFile(ctx, "f.txt", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if got := mustExec(t, b, "stat -c '%u:%g' /workspace /workspace/f.txt; cat f.txt"); got != "1000:1000\n1000:1000\nhi" {
		t.Errorf("got %q", got)
	}
}

func TestOpenAndDestroy(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	spec := testSpec(t)
	spec.WorkspaceDir = hostWorkspace(t)
	b, err := p.CreateBackend(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Destroy(context.Background(), b.Info()) })
	if err := b.WriteFile(ctx, "keep.txt", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	// Another provider (a restarted host) reattaches, even to a stopped container.
	timeout := 1
	if err := testClient.ContainerStop(ctx, b.Info().ID, container.StopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadFile(ctx, "keep.txt", 100); perr.CodeOf(err) != sandbox.CodeSandboxLost {
		t.Errorf("read in a stopped container: want %s, got %v", sandbox.CodeSandboxLost, err)
	}
	p2 := newTestProvider(t, Options{})
	b2, err := p2.OpenBackend(ctx, b.Info())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b2.ReadFile(ctx, "keep.txt", 100); err != nil || string(got) != "kept" {
		t.Errorf("after reopen: %q %v", got, err)
	}
	if err := p.Destroy(ctx, b.Info()); err != nil {
		t.Fatal(err)
	}
	if err := p.Destroy(ctx, b.Info()); err != nil {
		t.Errorf("second destroy: %v", err)
	}
	if _, err := p.OpenBackend(ctx, b.Info()); perr.CodeOf(err) != sandbox.CodeSandboxLost {
		t.Errorf("open after destroy: want %s, got %v", sandbox.CodeSandboxLost, err)
	}
	if _, err := b2.Exec(ctx, sandbox.ExecRequest{Command: "true"}); perr.CodeOf(err) != sandbox.CodeSandboxLost {
		t.Errorf("exec after destroy: want %s, got %v", sandbox.CodeSandboxLost, err)
	}
	if _, err := b2.ReadFile(ctx, "keep.txt", 10); perr.CodeOf(err) != sandbox.CodeSandboxLost {
		t.Errorf("read after destroy: want %s, got %v", sandbox.CodeSandboxLost, err)
	}

	// A container Polos did not create is neither opened nor destroyed.
	other, err := testClient.ContainerCreate(ctx, &container.Config{Image: images.BusyboxRef, Cmd: []string{"true"}}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = testClient.ContainerRemove(context.Background(), other.ID, container.RemoveOptions{Force: true})
	})
	info := sandbox.Info{Provider: sandbox.ProviderDocker, ID: other.ID}
	if _, err := p.OpenBackend(ctx, info); perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Errorf("open of an unmanaged container: %v", err)
	}
	if err := p.Destroy(ctx, info); perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Errorf("destroy of an unmanaged container: %v", err)
	}
}

func TestCreateRejectsBadSpecs(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	rootOwned := t.TempDir() // 0700 root: not writable by 1000
	for name, mutate := range map[string]func(*sandbox.Spec){
		"no owner":         func(s *sandbox.Spec) { s.Owner = "" },
		"missing image":    func(s *sandbox.Spec) { s.Image = "polos/does-not-exist:1" },
		"host network":     func(s *sandbox.Spec) { s.Network = "host" },
		"bad memory":       func(s *sandbox.Spec) { s.Memory = "lots" },
		"relative ws":      func(s *sandbox.Spec) { s.WorkspaceDir = "ws" },
		"missing ws":       func(s *sandbox.Spec) { s.WorkspaceDir = "/nonexistent/ws" },
		"unwritable ws":    func(s *sandbox.Spec) { s.WorkspaceDir = rootOwned },
		"bad scope":        func(s *sandbox.Spec) { s.Scope = "forever" },
		"bad env":          func(s *sandbox.Spec) { s.Env = map[string]string{"1X": "y"} },
		"negative pids":    func(s *sandbox.Spec) { s.PidsLimit = -1 },
		"negative cpus":    func(s *sandbox.Spec) { s.CPUs = -2 },
		"memory too small": func(s *sandbox.Spec) { s.Memory = "1m" },
	} {
		spec := testSpec(t)
		mutate(&spec)
		b, err := p.CreateBackend(ctx, spec)
		if err == nil {
			_ = p.Destroy(ctx, b.Info())
		}
		if perr.CodeOf(err) != sandbox.CodeBadRequest {
			t.Errorf("%s: want %s, got %v", name, sandbox.CodeBadRequest, err)
		}
	}
	if _, err := New(Options{Client: testClient, User: "0:0"}); perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Errorf("root user: %v", err)
	}
}

func TestSweepRemovesOrphans(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	// Own host id: the sweep must not see other tests' containers.
	p := newTestProvider(t, Options{HostID: testHostID + "-sweep"})
	specAlive, specDead := testSpec(t), testSpec(t)
	specAlive.Owner, specDead.Owner = "run-alive", "run-dead"
	alive := newBackend(t, p, specAlive)
	dead := newBackend(t, p, specDead)
	other := newBackend(t, newTestProvider(t, Options{HostID: testHostID + "-other"}), specDead)

	removed, err := p.Sweep(ctx, func(owner string) bool { return owner == "run-alive" })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{dead.Info().ID}) {
		t.Errorf("removed %v, want only %s", removed, dead.Info().ID)
	}
	for b, wantGone := range map[*Backend]bool{alive: false, dead: true, other: false} {
		_, err := testClient.ContainerInspect(ctx, b.Info().ID)
		if gone := err != nil; gone != wantGone {
			t.Errorf("container %s: gone=%v, want %v (%v)", b.Info().ID, gone, wantGone, err)
		}
	}
}

func TestReapIdle(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	p := newTestProvider(t, Options{HostID: testHostID + "-reap", Now: func() time.Time { return time.Unix(0, now.Load()) }})
	mk := func(owner string) *Backend {
		s := testSpec(t)
		s.Owner = owner
		return newBackend(t, p, s)
	}
	idle, waiting, fresh, busy := mk("run-idle"), mk("run-waiting"), mk("run-fresh"), mk("run-busy")

	// busy gets a long command in flight; then an hour passes and fresh is used.
	busyCtx, stopBusy := context.WithCancel(context.Background())
	execDone := make(chan struct{})
	go func() {
		defer close(execDone)
		_, _ = busy.Exec(busyCtx, sandbox.ExecRequest{Command: "sleep 1004", TimeoutSec: 600})
	}()
	checkFor(t, 60*time.Second, "the busy exec to be in flight", func() bool {
		_, _, inflight := p.act.idleSince(busy.Info().ID)
		return inflight
	})
	now.Add(int64(time.Hour))
	mustExec(t, fresh, "true")

	removed, err := p.ReapIdle(ctx, 30*time.Minute, func(owner string) bool { return owner == "run-waiting" })
	stopBusy()
	<-execDone
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{idle.Info().ID}) {
		t.Errorf("reaped %v, want only the idle sandbox %s", removed, idle.Info().ID)
	}
	for b, wantGone := range map[*Backend]bool{idle: true, waiting: false, fresh: false, busy: false} {
		_, err := testClient.ContainerInspect(ctx, b.Info().ID)
		if gone := err != nil; gone != wantGone {
			t.Errorf("%s: gone=%v, want %v", b.Info().ID, gone, wantGone)
		}
	}
	// Once the owner stops waiting, the idle sandbox goes too.
	now.Add(int64(time.Hour))
	removed, err = p.ReapIdle(ctx, 30*time.Minute, func(string) bool { return false })
	if err != nil || len(removed) != 3 {
		t.Errorf("second reap removed %v, %v; want the 3 others", removed, err)
	}
}

// TestWritesRefuseHardLinks: a hard link planted in a bind-mounted
// workspace before the run names a file outside it on the host; write and
// edit through it must be refused (the check runs inside the container)
// and the outside file must stay as it was. A link made inside the
// container is refused too; files with one link are written as usual.
func TestWritesRefuseHardLinks(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := newTestProvider(t, Options{})
	dir := hostWorkspace(t)
	outside := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(outside, []byte("ssh-ed25519 AAAA owner\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The outside file belongs to the sandbox's uid, as the files of the
	// host user whose workspace is bind-mounted do.
	if err := os.Chown(outside, images.SandboxUID, images.SandboxGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(outside, filepath.Join(dir, "notes.txt")); err != nil {
		t.Fatal(err)
	}
	spec := testSpec(t)
	spec.WorkspaceDir = dir
	b := newBackend(t, p, spec)
	tools := sandbox.New(b)

	err := b.WriteFile(ctx, "notes.txt", []byte("ssh-ed25519 AAAA attacker\n"))
	if !perr.Has(err, sandbox.CodeHardLink) {
		t.Fatalf("write through a planted hard link: %v, want %s", err, sandbox.CodeHardLink)
	}
	_, err = tools.Edit(ctx, sandbox.EditRequest{Path: "/workspace/notes.txt", OldText: "owner", NewText: "attacker"})
	if !perr.Has(err, sandbox.CodeHardLink) {
		t.Fatalf("edit through a planted hard link: %v, want %s", err, sandbox.CodeHardLink)
	}
	if got, _ := os.ReadFile(outside); string(got) != "ssh-ed25519 AAAA owner\n" {
		t.Fatalf("the outside file changed: %q", got)
	}

	mustExec(t, b, "echo one > a.txt && ln a.txt b.txt")
	if err := b.WriteFile(ctx, "b.txt", []byte("two\n")); !perr.Has(err, sandbox.CodeHardLink) {
		t.Fatalf("write to a link made in the container: %v", err)
	}
	if got := mustExec(t, b, "cat a.txt"); got != "one\n" {
		t.Fatalf("a.txt changed through b.txt: %q", got)
	}
	mustExec(t, b, "rm b.txt")
	if _, err := tools.Write(ctx, sandbox.WriteRequest{Path: "a.txt", Content: "three\n"}); err != nil {
		t.Fatalf("write to a file with one link: %v", err)
	}
	if _, err := tools.Write(ctx, sandbox.WriteRequest{Path: "new/dir/c.txt", Content: "new\n"}); err != nil {
		t.Fatalf("write of a new file: %v", err)
	}
	if got := mustExec(t, b, "cat a.txt new/dir/c.txt"); got != "three\nnew\n" {
		t.Fatalf("after writes: %q", got)
	}
}
