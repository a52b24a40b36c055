package local_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polos-run/polos/perr"

	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/local"
	"github.com/polos-run/polos/sandbox/sandboxtest"
)

func TestConformance(t *testing.T) {
	for _, mode := range []string{local.ConfinementRequired, local.ConfinementNone} {
		t.Run(mode, func(t *testing.T) {
			sandboxtest.Run(t, func(t *testing.T) (sandbox.Provider, sandbox.Spec) {
				return local.NewWithOptions(local.Options{Confinement: mode}),
					sandbox.Spec{Provider: sandbox.ProviderLocal, Owner: "run-1", WorkspaceDir: t.TempDir() + "/ws"}
			})
		})
	}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func create(t *testing.T, p *local.Provider) (sandbox.Sandbox, sandbox.Spec) {
	t.Helper()
	spec := sandbox.Spec{Provider: sandbox.ProviderLocal, Owner: "run-1", WorkspaceDir: filepath.Join(t.TempDir(), "a", "ws")}
	sb, err := p.Create(ctxFor(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	return sb, spec
}

func run(t *testing.T, sb sandbox.Sandbox, req sandbox.ExecRequest) sandbox.ExecResult {
	t.Helper()
	res, err := sb.Exec(ctxFor(t), req)
	if err != nil {
		t.Fatalf("exec %q: %v", req.Command, err)
	}
	return res
}

// TestExecEnvHasNoDaemonSecrets sets secrets in the daemon's environment and
// checks the command sees only the documented allowlist.
func TestExecEnvHasNoDaemonSecrets(t *testing.T) {
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
	t.Setenv("POLOS_TEST_TOKEN", "tok-secret")
	sb, _ := create(t, local.New())
	res := run(t, sb, sandbox.ExecRequest{Command: "env", Env: map[string]string{"MINE": "1"}})
	if strings.Contains(res.Stdout, "secret") {
		t.Fatalf("a daemon secret reached the command:\n%s", res.Stdout)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
		name, _, _ := strings.Cut(line, "=")
		names = append(names, name)
	}
	allowed := map[string]bool{"PATH": true, "HOME": true, "LANG": true, "TERM": true, "TZ": true, "MINE": true,
		"PWD": true, "SHLVL": true, "_": true, "OLDPWD": true} // the last four are set by sh itself
	for _, n := range names {
		if !allowed[n] {
			t.Errorf("unexpected variable %s in the command's environment", n)
		}
	}
	if res := run(t, sb, sandbox.ExecRequest{Command: `printf %s "$HOME"`}); res.Stdout != sb.Info().Workspace {
		t.Errorf("HOME = %q, want the workspace %q", res.Stdout, sb.Info().Workspace)
	}
}

// TestExecLoaderVariablesRefused: LD_* and DYLD_* in the request or the
// sandbox spec are refused; PATH may be set.
func TestExecLoaderVariablesRefused(t *testing.T) {
	p := local.New()
	sb, spec := create(t, p)
	for _, name := range []string{"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES"} {
		_, err := sb.Exec(ctxFor(t), sandbox.ExecRequest{Command: "touch pwned", Env: map[string]string{name: "/tmp/evil.so"}})
		if !perr.Has(err, sandbox.CodeBadRequest) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s in request env: got %v, want a %s error naming it", name, err, sandbox.CodeBadRequest)
		}
	}
	if _, err := os.Stat(filepath.Join(sb.Info().Workspace, "pwned")); err == nil {
		t.Error("a refused exec ran")
	}
	spec.Env = map[string]string{"LD_PRELOAD": "/tmp/evil.so"}
	if _, err := p.Open(ctxFor(t), sb.Info(), spec); !perr.Has(err, sandbox.CodeBadRequest) {
		t.Errorf("LD_PRELOAD in spec env: got %v", err)
	}
	bin := filepath.Join(sb.Info().Workspace, "bin")
	if _, err := sb.Write(ctxFor(t), sandbox.WriteRequest{Path: "bin/hello", Content: "#!/bin/sh\necho from-path\n"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(bin, "hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	res := run(t, sb, sandbox.ExecRequest{Command: "hello", Env: map[string]string{"PATH": bin + ":/usr/bin:/bin"}})
	if res.Stdout != "from-path\n" {
		t.Errorf("request PATH not used: %+v", res)
	}
}

// TestRootEscapeDetected pins the os.Root error text isEscape relies on: a
// symlink out of the workspace must give CodeOutsideWorkspace, not a
// generic provider error.
func TestRootEscapeDetected(t *testing.T) {
	sb, _ := create(t, local.New())
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(sb.Info().Workspace, "out")); err != nil {
		t.Fatal(err)
	}
	_, err := sb.Write(ctxFor(t), sandbox.WriteRequest{Path: "out/x", Content: "x"})
	if perr.CodeOf(err) != sandbox.CodeOutsideWorkspace {
		t.Fatalf("write through a symlinked parent: %v", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("write escaped: %v", entries)
	}
	// A symlink that stays inside the workspace is fine.
	if err := os.Symlink("real", filepath.Join(sb.Info().Workspace, "alias")); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Write(ctxFor(t), sandbox.WriteRequest{Path: "real/f.txt", Content: "in\n"}); err != nil {
		t.Fatal(err)
	}
	r, err := sb.Read(ctxFor(t), sandbox.ReadRequest{Path: "alias/f.txt"})
	if err != nil || r.Content != "in\n" {
		t.Fatalf("read through an inside symlink: %+v, %v", r, err)
	}
}

func TestCreateOpenLost(t *testing.T) {
	p := local.New()
	sb, spec := create(t, p)
	info := sb.Info()
	if info.ID != local.ID(info.Workspace, "run-1") || !filepath.IsAbs(info.Workspace) {
		t.Errorf("Info = %+v", info)
	}
	again, err := p.Create(ctxFor(t), spec)
	if err != nil || again.Info() != info {
		t.Errorf("creating the same sandbox twice gave %+v, %v", again.Info(), err)
	}
	if err := os.RemoveAll(info.Workspace); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Open(ctxFor(t), info, spec); perr.CodeOf(err) != sandbox.CodeSandboxLost {
		t.Errorf("Open of a vanished workspace: %v", err)
	}
	if _, err := sb.Read(ctxFor(t), sandbox.ReadRequest{Path: "x"}); perr.CodeOf(err) != sandbox.CodeSandboxLost {
		t.Errorf("read in a vanished workspace: %v", err)
	}
	if _, err := sb.Exec(ctxFor(t), sandbox.ExecRequest{Command: "true"}); perr.CodeOf(err) != sandbox.CodeSandboxLost {
		t.Errorf("exec in a vanished workspace: %v", err)
	}
	if _, err := p.Open(ctxFor(t), sandbox.Info{Provider: "docker", ID: "x", Workspace: "/w"}, spec); perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Errorf("Open of a docker Info: %v", err)
	}
}

// TestDestroyKillsBackgroundChildren: unconfined, a server left running by
// exec dies with Destroy; the workspace stays. (Confined, it dies when the
// shell exits: TestConfinedChildrenDie.)
func TestDestroyKillsBackgroundChildren(t *testing.T) {
	p := local.NewWithOptions(local.Options{Confinement: local.ConfinementNone})
	sb, _ := create(t, p)
	res := run(t, sb, sandbox.ExecRequest{Command: "sleep 1000 >/dev/null 2>&1 & echo $!"})
	pid, err := strconv.Atoi(strings.TrimSpace(res.Stdout))
	if err != nil {
		t.Fatalf("pid %q: %v", res.Stdout, err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("background child not running after exec: %v", err)
	}
	if err := p.Destroy(ctxFor(t), sb.Info()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatal("background child alive after Destroy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(sb.Info().Workspace); err != nil {
		t.Errorf("Destroy removed the workspace: %v", err)
	}
}

// TestSpecialFilesRefused: a FIFO planted in the workspace must not hang
// read, write or grep.
func TestSpecialFilesRefused(t *testing.T) {
	sb, _ := create(t, local.New())
	if err := syscall.Mkfifo(filepath.Join(sb.Info().Workspace, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Read(ctxFor(t), sandbox.ReadRequest{Path: "fifo"}); perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Errorf("read of a FIFO: %v", err)
	}
	if _, err := sb.Write(ctxFor(t), sandbox.WriteRequest{Path: "fifo", Content: "x"}); err == nil {
		t.Error("write to a FIFO succeeded")
	}
	if _, err := sb.Grep(ctxFor(t), sandbox.GrepRequest{Pattern: "x"}); err != nil {
		t.Errorf("grep over a FIFO: %v", err)
	}
	if _, err := sb.Read(ctxFor(t), sandbox.ReadRequest{Path: "."}); perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Errorf("read of a directory: %v", err)
	}
}

// TestExecOutputFlood: a command printing far more than the cap keeps
// memory bounded and reports the exact number of characters cut.
func TestExecOutputFlood(t *testing.T) {
	sb, _ := create(t, local.New())
	res := run(t, sb, sandbox.ExecRequest{Command: "head -c 20000000 /dev/zero | tr '\\000' z"})
	if !res.Truncated {
		t.Fatal("20 MB of output not truncated")
	}
	marker := strings.TrimSpace(strings.Trim(res.Stdout, "z"))
	var cut int
	if _, err := fmt.Sscanf(marker, "... [%d characters truncated] ...", &cut); err != nil {
		t.Fatalf("marker %q: %v", marker, err)
	}
	kept := strings.Count(res.Stdout, "z")
	if cut+kept != 20000000 {
		t.Errorf("cut %d + kept %d != 20,000,000", cut, kept)
	}
}
