package docker

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/polos-run/polos/images"
	"github.com/polos-run/polos/sandbox"
)

// testHostID labels every container these tests create, so a sweep at the
// start and the end of the test binary removes leftovers of crashed runs.
const testHostID = "polos-test-sandbox-docker"

// skipEnv, set to 1, lets the tests pass on a machine without a Docker
// engine. Without it an unreachable engine fails the tests loudly.
const skipEnv = "POLOS_SKIP_DOCKER"

var testClient client.APIClient

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		_, err = cli.Ping(ctx)
	}
	if err != nil {
		if os.Getenv(skipEnv) == "1" {
			fmt.Fprintf(os.Stderr, "docker sandbox tests SKIPPED (%s=1): engine unreachable: %v\n", skipEnv, err)
			return 0
		}
		fmt.Fprintf(os.Stderr, "FAIL: the Docker engine is unreachable (%v); start it, or set %s=1 to skip these tests explicitly\n", err, skipEnv)
		return 1
	}
	testClient = cli
	if err := images.EnsureBusybox(ctx, cli, images.BusyboxRef); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot build %s: %v\n", images.BusyboxRef, err)
		return 1
	}
	sweepTestContainers(ctx)
	code := m.Run()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel2()
	sweepTestContainers(ctx2)
	return code
}

func sweepTestContainers(ctx context.Context) {
	p, err := New(Options{Client: testClient, HostID: testHostID})
	if err != nil {
		panic(err)
	}
	if _, err := p.Sweep(ctx, func(string) bool { return false }); err != nil {
		fmt.Fprintln(os.Stderr, "sweep of test containers:", err)
	}
}

// newTestProvider returns a provider on the shared client with the test host id.
func newTestProvider(t testing.TB, opts Options) *Provider {
	t.Helper()
	opts.Client = testClient
	if opts.HostID == "" {
		opts.HostID = testHostID
	}
	if opts.DefaultImage == "" {
		opts.DefaultImage = images.BusyboxRef
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// testSpec is a busybox sandbox spec with a unique owner.
func testSpec(t testing.TB) sandbox.Spec {
	return sandbox.Spec{Provider: sandbox.ProviderDocker, Owner: "test-" + t.Name(), Image: images.BusyboxRef, Memory: "256m"}
}

// newBackend creates a sandbox and destroys it when the test ends.
func newBackend(t testing.TB, p *Provider, spec sandbox.Spec) *Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := p.CreateBackend(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Destroy(context.Background(), b.Info()); err != nil {
			t.Errorf("destroy: %v", err)
		}
	})
	return b
}

// hostWorkspace is a host directory the sandbox user may write.
func hostWorkspace(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chown(dir, images.SandboxUID, images.SandboxGID); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkFor polls cond until it holds or the deadline passes.
func checkFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(delay)
	}
}

// mustExec runs a command that must succeed and returns its stdout.
func mustExec(t testing.TB, b *Backend, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := b.Exec(ctx, sandbox.ExecRequest{Command: cmd, TimeoutSec: 60})
	if err != nil {
		t.Fatalf("exec %q: %v", cmd, err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exec %q: exit %d, stdout %q, stderr %q", cmd, res.ExitCode, res.Stdout, res.Stderr)
	}
	return res.Stdout
}
