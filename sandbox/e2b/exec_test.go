package e2b_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/e2b"
	"github.com/polos-run/polos/sandbox/e2b/e2bfake"
)

const testTimeout = 60 * time.Second

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newBackend starts a fake and creates one sandbox in it.
func newBackend(t testing.TB, opts e2bfake.Options) (*e2bfake.Server, *e2b.Provider, *e2b.Backend) {
	t.Helper()
	srv, p := startFake(t, opts)
	b, err := p.CreateBackend(testCtx(t), sandbox.Spec{Owner: "test"})
	if err != nil {
		t.Fatalf("CreateBackend: %v", err)
	}
	return srv, p, b
}

func mustExec(t testing.TB, b *e2b.Backend, req sandbox.ExecRequest) sandbox.ExecResult {
	t.Helper()
	if req.TimeoutSec == 0 {
		req.TimeoutSec = 60
	}
	res, err := b.Exec(testCtx(t), req)
	if err != nil {
		t.Fatalf("exec %q: %v", req.Command, err)
	}
	return res
}

func wantCode(t testing.TB, what string, err error, code perr.Code) {
	t.Helper()
	if !perr.Has(err, code) {
		t.Fatalf("%s: got %v (code %q), want code %s", what, err, perr.CodeOf(err), code)
	}
}

// checkFor polls cond until it holds, failing after a generous deadline.
func checkFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still false after 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid is a live (non-zombie) process, asked inside
// the sandbox.
func alive(t testing.TB, b *e2b.Backend, pid string) bool {
	res := mustExec(t, b, sandbox.ExecRequest{Command: `s=$(cut -d' ' -f3 /proc/"$P"/stat 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ] && echo alive || echo gone`, Env: map[string]string{"P": pid}})
	return res.Stdout == "alive\n"
}

func TestExecExitCodesAndOutput(t *testing.T) {
	_, _, b := newBackend(t, e2bfake.Options{})
	res := mustExec(t, b, sandbox.ExecRequest{Command: "echo hello; echo oops >&2; exit 3"})
	if res.ExitCode != 3 || res.Stdout != "hello\n" || res.Stderr != "oops\n" || res.TimedOut {
		t.Errorf("exit 3: %+v", res)
	}
	res = mustExec(t, b, sandbox.ExecRequest{Command: "true"})
	if res.ExitCode != 0 || res.TimedOut {
		t.Errorf("exit 0 (exitCode absent on the wire): %+v", res)
	}
	res = mustExec(t, b, sandbox.ExecRequest{Command: "no-such-command-polos"})
	if res.ExitCode != 127 || !strings.Contains(res.Stderr, "not found") {
		t.Errorf("command not found: %+v", res)
	}
	res = mustExec(t, b, sandbox.ExecRequest{Command: "kill -9 $$"})
	if res.ExitCode != -1 || res.TimedOut {
		t.Errorf("killed by a signal: %+v", res)
	}
	// stdin is closed (stdin:false): cat must not block.
	res = mustExec(t, b, sandbox.ExecRequest{Command: "cat; echo done"})
	if res.Stdout != "done\n" {
		t.Errorf("cat with stdin off: %+v", res)
	}
}

func TestExecLargeOutputReassembled(t *testing.T) {
	_, _, b := newBackend(t, e2bfake.Options{})
	// 90,000 bytes: several 32 KiB data events, under the 100,000-char cap.
	res := mustExec(t, b, sandbox.ExecRequest{Command: `i=0; while [ $i -lt 9000 ]; do printf '%09d\n' $i; i=$((i+1)); done`})
	var want strings.Builder
	for i := range 9000 {
		fmt.Fprintf(&want, "%09d\n", i)
	}
	if res.Stdout != want.String() || res.Truncated {
		t.Errorf("90 kB of output came back as %d bytes (truncated %v)", len(res.Stdout), res.Truncated)
	}
}

func TestExecShellMetacharactersAreData(t *testing.T) {
	_, _, b := newBackend(t, e2bfake.Options{})
	hostile := "$(touch pwned) `touch pwned` ; touch pwned | & \" ' \n"
	res := mustExec(t, b, sandbox.ExecRequest{Command: `printf %s "$X"; ls`, Env: map[string]string{"X": hostile, "LD_PRELOAD": "", "PATH": "/usr/bin:/bin"}})
	if !strings.HasPrefix(res.Stdout, hostile) || strings.Contains(res.Stdout, "pwned\n") {
		t.Errorf("env value was interpreted: %q", res.Stdout)
	}
}

func TestExecCwd(t *testing.T) {
	_, _, b := newBackend(t, e2bfake.Options{})
	mustExec(t, b, sandbox.ExecRequest{Command: "mkdir -p 'a b/c'"})
	res := mustExec(t, b, sandbox.ExecRequest{Command: "pwd", Cwd: "a b/c"})
	if res.Stdout != "/home/user/a b/c\n" {
		t.Errorf("pwd in cwd 'a b/c' = %q", res.Stdout)
	}
	_, err := b.Exec(testCtx(t), sandbox.ExecRequest{Command: "pwd", Cwd: "missing"})
	wantCode(t, "exec in a missing cwd", err, sandbox.CodeNotFound)
	_, err = b.Exec(testCtx(t), sandbox.ExecRequest{Command: "pwd", Cwd: "../.."})
	wantCode(t, "exec in ../..", err, sandbox.CodeOutsideWorkspace)
	_, err = b.Exec(testCtx(t), sandbox.ExecRequest{Command: "pwd", TimeoutSec: -1})
	wantCode(t, "negative timeout", err, sandbox.CodeBadRequest)
}

func TestExecTimeout(t *testing.T) {
	for _, leaderOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("SignalLeaderOnly=%v", leaderOnly), func(t *testing.T) {
			_, _, b := newBackend(t, e2bfake.Options{SignalLeaderOnly: leaderOnly})
			res := mustExec(t, b, sandbox.ExecRequest{Command: "sleep 1000 & echo $! > bg.pid; echo before; sleep 1000", TimeoutSec: 1})
			if res.ExitCode != -1 || !res.TimedOut || res.Stdout != "before\n" {
				t.Fatalf("timed out exec = %+v, want -1, timed out, partial output", res)
			}
			pid := strings.TrimSpace(mustExec(t, b, sandbox.ExecRequest{Command: "cat bg.pid"}).Stdout)
			// With SignalLeaderOnly (real envd) only the POLOS_EXEC_ID sweep
			// can have killed the background child.
			checkFor(t, "background child "+pid+" killed", func() bool { return !alive(t, b, pid) })
		})
	}
}

func TestExecContextCancelKills(t *testing.T) {
	srv, _, b := newBackend(t, e2bfake.Options{SignalLeaderOnly: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type out struct {
		res sandbox.ExecResult
		err error
	}
	done := make(chan out, 1)
	starts := srv.Starts()
	go func() {
		res, err := b.Exec(ctx, sandbox.ExecRequest{Command: "echo $$ > leader.pid; sleep 1000 & echo $! > bg.pid; wait", TimeoutSec: 600})
		done <- out{res, err}
	}()
	checkFor(t, "command started and wrote its pids", func() bool {
		if srv.Starts() == starts {
			return false
		}
		r, err := b.Exec(testCtx(t), sandbox.ExecRequest{Command: "test -s bg.pid && test -s leader.pid && echo ok", TimeoutSec: 30})
		return err == nil && r.Stdout == "ok\n"
	})
	cancel()
	var o out
	select {
	case o = <-done:
	case <-time.After(testTimeout):
		t.Fatal("Exec did not return after its context was cancelled")
	}
	if o.err != nil || o.res.ExitCode != -1 || !o.res.TimedOut {
		t.Fatalf("cancelled exec = %+v, %v; want exit -1, timed out", o.res, o.err)
	}
	for _, f := range []string{"leader.pid", "bg.pid"} {
		pid := strings.TrimSpace(mustExec(t, b, sandbox.ExecRequest{Command: "cat " + f}).Stdout)
		checkFor(t, f+" "+pid+" killed after cancel", func() bool { return !alive(t, b, pid) })
	}
}

func TestExecTruncatedStream(t *testing.T) {
	srv, _, b := newBackend(t, e2bfake.Options{})
	srv.TruncateStreams(1)
	_, err := b.Exec(testCtx(t), sandbox.ExecRequest{Command: "echo hi", TimeoutSec: 30})
	wantCode(t, "exec whose stream lost its 0x02 envelope", err, sandbox.CodeProvider)
	if !strings.Contains(err.Error(), "end-of-stream") {
		t.Errorf("error does not say what broke: %v", err)
	}
	// The next command is unaffected.
	if res := mustExec(t, b, sandbox.ExecRequest{Command: "echo ok"}); res.Stdout != "ok\n" {
		t.Errorf("after a truncated stream: %+v", res)
	}
}

func TestExecKeepalivesIgnored(t *testing.T) {
	_, _, b := newBackend(t, e2bfake.Options{Keepalive: 20 * time.Millisecond})
	res := mustExec(t, b, sandbox.ExecRequest{Command: "sleep 0.3; echo after"})
	if res.Stdout != "after\n" || res.ExitCode != 0 {
		t.Errorf("exec with keepalives = %+v", res)
	}
}

func TestSandboxGone(t *testing.T) {
	srv, p, b := newBackend(t, e2bfake.Options{})
	if !srv.Vanish(b.Info().ID) {
		t.Fatal("Vanish: no such sandbox")
	}
	_, err := b.Exec(testCtx(t), sandbox.ExecRequest{Command: "true", TimeoutSec: 10})
	wantCode(t, "exec in a vanished sandbox (502)", err, sandbox.CodeSandboxLost)
	_, err = b.ReadFile(testCtx(t), "x", 10)
	wantCode(t, "read in a vanished sandbox", err, sandbox.CodeSandboxLost)
	_, err = p.Open(testCtx(t), b.Info(), sandbox.Spec{})
	wantCode(t, "open a vanished sandbox (404)", err, sandbox.CodeSandboxLost)
	if err := p.Destroy(testCtx(t), b.Info()); err != nil {
		t.Errorf("destroy of a vanished sandbox (404) = %v, want success", err)
	}
}

func TestSandboxLifetime(t *testing.T) {
	srv, p := startFake(t, e2bfake.Options{})
	ctx := testCtx(t)
	sb, err := p.Create(ctx, sandbox.Spec{TimeoutSec: 1})
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, "sandbox ended after its 1 s lifetime", func() bool { return len(srv.Running()) == 0 })
	_, err = p.Open(ctx, sb.Info(), sandbox.Spec{})
	wantCode(t, "open after the lifetime", err, sandbox.CodeSandboxLost)

	sb, err = p.Create(ctx, sandbox.Spec{TimeoutSec: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetTimeout(ctx, sb.Info(), time.Second); err != nil {
		t.Fatalf("SetTimeout: %v", err)
	}
	checkFor(t, "sandbox ended after SetTimeout(1s)", func() bool { return len(srv.Running()) == 0 })
	err = p.SetTimeout(ctx, sb.Info(), time.Second)
	wantCode(t, "SetTimeout of a gone sandbox", err, sandbox.CodeSandboxLost)
}

func TestOpenFromAnotherProcess(t *testing.T) {
	srv, p, b := newBackend(t, e2bfake.Options{})
	if err := b.WriteFile(testCtx(t), "note.txt", []byte("from host A")); err != nil {
		t.Fatal(err)
	}
	// A second provider shares nothing with the first but the Info.
	other := e2b.NewProvider(e2b.Config{APIKey: srv.APIKey(), APIURL: srv.URL, EnvdURL: srv.URL})
	b2, err := other.OpenBackend(testCtx(t), b.Info())
	if err != nil {
		t.Fatalf("Open from another provider: %v", err)
	}
	got, err := b2.ReadFile(testCtx(t), "/home/user/note.txt", 100)
	if err != nil || string(got) != "from host A" {
		t.Fatalf("read through the reopened sandbox = %q, %v", got, err)
	}
	if res := mustExec(t, b2, sandbox.ExecRequest{Command: "cat note.txt"}); res.Stdout != "from host A" {
		t.Errorf("exec through the reopened sandbox = %+v", res)
	}
	if err := p.Destroy(testCtx(t), b.Info()); err != nil {
		t.Fatal(err)
	}
	if err := other.Destroy(testCtx(t), b.Info()); err != nil {
		t.Errorf("second destroy (404) = %v, want success", err)
	}
	if len(srv.Running()) != 0 {
		t.Errorf("sandboxes still running: %v", srv.Running())
	}
}

func TestCreateErrors(t *testing.T) {
	srv, p := startFake(t, e2bfake.Options{MaxConcurrent: 1})
	ctx := testCtx(t)

	bad := e2b.NewProvider(e2b.Config{APIKey: "e2b_bad", APIURL: srv.URL, EnvdURL: srv.URL})
	_, err := bad.Create(ctx, sandbox.Spec{})
	wantCode(t, "create with a bad key (401)", err, sandbox.CodeProvider)
	if !strings.Contains(err.Error(), e2b.EnvAPIKey) {
		t.Errorf("401 error does not say to set %s: %v", e2b.EnvAPIKey, err)
	}
	none := e2b.NewProvider(e2b.Config{APIURL: srv.URL})
	_, err = none.Create(ctx, sandbox.Spec{})
	wantCode(t, "create without a key", err, sandbox.CodeProvider)
	if !strings.Contains(err.Error(), e2b.EnvAPIKey) {
		t.Errorf("missing-key error does not name %s: %v", e2b.EnvAPIKey, err)
	}

	_, err = p.Create(ctx, sandbox.Spec{TimeoutSec: 7200})
	wantCode(t, "create over the team's max lifetime (400)", err, sandbox.CodeBadRequest)
	if !strings.Contains(err.Error(), "cannot be greater than 1 hours") {
		t.Errorf("400 error lacks the API's message: %v", err)
	}
	_, err = p.Create(ctx, sandbox.Spec{TimeoutSec: -5})
	wantCode(t, "create with a negative lifetime", err, sandbox.CodeBadRequest)

	srv.RejectCreates(1)
	_, err = p.Create(ctx, sandbox.Spec{})
	wantCode(t, "create at capacity (429 knob)", err, sandbox.CodeUnavailable)

	if _, err := p.Create(ctx, sandbox.Spec{}); err != nil {
		t.Fatalf("create: %v", err)
	}
	_, err = p.Create(ctx, sandbox.Spec{})
	wantCode(t, "create past MaxConcurrent (429)", err, sandbox.CodeUnavailable)
	if !strings.Contains(err.Error(), "concurrent") {
		t.Errorf("429 error lacks the API's message: %v", err)
	}

	_, err = p.Open(ctx, sandbox.Info{Provider: "e2b", ID: "../../etc"}, sandbox.Spec{})
	wantCode(t, "open with a malformed ID", err, sandbox.CodeBadRequest)
	_, err = p.Open(ctx, sandbox.Info{Provider: "docker", ID: "abc"}, sandbox.Spec{})
	wantCode(t, "open of another provider's sandbox", err, sandbox.CodeBadRequest)

	unreachable := e2b.NewProvider(e2b.Config{APIKey: srv.APIKey(), APIURL: "http://127.0.0.1:1"})
	_, err = unreachable.Create(ctx, sandbox.Spec{})
	wantCode(t, "create with the API unreachable", err, sandbox.CodeUnavailable)
}

func TestWalk(t *testing.T) {
	_, _, b := newBackend(t, e2bfake.Options{})
	deep := "w/" + strings.Repeat("d/", 11) + "leaf.txt" // deeper than one ListDir call
	mustExec(t, b, sandbox.ExecRequest{Command: `mkdir -p w/a/skip/x w/b "$(dirname "$D")" && touch w/a/1 w/a/skip/x/2 w/b/3 w/a-c "$D" && ln -s /etc w/link`, Env: map[string]string{"D": deep}})
	type entry struct {
		rel   string
		isDir bool
	}
	walk := func(fn func(rel string, isDir bool) error) []entry {
		var got []entry
		err := b.Walk(testCtx(t), "w", func(rel string, isDir bool) error {
			got = append(got, entry{rel, isDir})
			return fn(rel, isDir)
		})
		if err != nil {
			t.Fatalf("Walk: %v", err)
		}
		return got
	}
	got := walk(func(rel string, isDir bool) error {
		if rel == "a/skip" {
			return errSkipDir
		}
		return nil
	})
	want := []entry{{"a", true}, {"a/1", false}, {"a/skip", true}, {"a-c", false}, {"b", true}, {"b/3", false}}
	for i, p := 0, "d"; i < 11; i, p = i+1, p+"/d" {
		want = append(want, entry{p, true})
	}
	want = append(want, entry{strings.TrimPrefix(deep, "w/"), false}, entry{"link", false})
	if !slices.Equal(got, want) {
		t.Errorf("walk order:\n got %v\nwant %v", got, want)
	}
	got = walk(func(rel string, isDir bool) error {
		if rel == "a/1" {
			return errSkipAll
		}
		return nil
	})
	if len(got) != 2 {
		t.Errorf("SkipAll did not stop the walk: %v", got)
	}
	err := b.Walk(testCtx(t), "missing", func(string, bool) error { return nil })
	wantCode(t, "walk of a missing root", err, sandbox.CodeNotFound)
	err = b.Walk(testCtx(t), "w/a/1", func(string, bool) error { return nil })
	wantCode(t, "walk of a file", err, sandbox.CodeBadRequest)
	sentinel := errors.New("stop")
	err = b.Walk(testCtx(t), "w", func(string, bool) error { return sentinel })
	if !errors.Is(err, sentinel) {
		t.Errorf("walk did not return fn's error: %v", err)
	}
}
