package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/control"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/examples/demo"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/sandbox/dispatch"
	"github.com/polos-run/polos/sandbox/local"
)

func TestReorder(t *testing.T) {
	app := App(IO{})
	cases := []struct{ in, want string }{
		{"polos status RUN -o json", "polos status -o json -- RUN"},
		{"polos resume RUN KEY --approve --feedback x y", "polos resume --approve --feedback x -- RUN KEY y"},
		{"polos run demo --input=hi --detach", "polos run --input=hi --detach -- demo"},
		{"polos tail --all", "polos tail --all"},
		{"polos help", "polos help"},
		{"polos policy check --policy p --command ls", "polos policy check --policy p --command ls"},
		{"polos run demo -- --literal", "polos run -- demo --literal"},
	}
	for _, c := range cases {
		got := strings.Join(reorder(app, strings.Fields(c.in)), " ")
		if got != c.want {
			t.Errorf("reorder(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestDecisionData(t *testing.T) {
	cases := []struct {
		data          string
		haveData      bool
		approve, rej  bool
		fb            string
		haveFB, alway bool
		want          string
		code          int
	}{
		{approve: true, want: `{"approved":true}`},
		{rej: true, fb: "no", haveFB: true, want: `{"approved":false,"feedback":"no"}`},
		{alway: true, want: `{"allow_always":true,"approved":true}`},
		{data: `{"approved":false,"x":1.50}`, haveData: true, approve: true, want: `{"approved":true,"x":1.50}`},
		{data: `{"answer":"blue"}`, haveData: true, want: `{"answer":"blue"}`},
		{data: `{`, haveData: true, code: ExitUsage},
		{data: `[]`, haveData: true, code: ExitUsage},
		{data: `{} {}`, haveData: true, code: ExitUsage},
		{approve: true, rej: true, code: ExitUsage},
		{rej: true, alway: true, code: ExitUsage},
		{code: ExitUsage},
	}
	for i, c := range cases {
		got, err := decisionData(c.data, c.haveData, c.approve, c.rej, c.fb, c.haveFB, c.alway)
		if c.code != 0 {
			if ExitCode(err) != c.code {
				t.Errorf("case %d: exit %d (%v), want %d", i, ExitCode(err), err, c.code)
			}
			continue
		}
		if err != nil || string(got) != c.want {
			t.Errorf("case %d: %s %v, want %s", i, got, err, c.want)
		}
	}
}

func FuzzDecisionData(f *testing.F) {
	f.Add(`{"approved":true}`, true, "x")
	f.Add(`{"a":{"b":[1,2]}}`, false, "")
	f.Add(`nul`, true, "$(rm -rf /)")
	f.Fuzz(func(t *testing.T, data string, approve bool, fb string) {
		got, err := decisionData(data, true, approve, false, fb, fb != "", false)
		if err != nil {
			if ExitCode(err) != ExitUsage {
				t.Fatalf("bad --data gave exit %d", ExitCode(err))
			}
			return
		}
		var m map[string]any
		if json.Unmarshal(got, &m) != nil {
			t.Fatalf("not an object: %s", got)
		}
		if approve && m["approved"] != true {
			t.Fatalf("--approve lost: %s", got)
		}
		if fb != "" && utf8.ValidString(fb) && m["feedback"] != fb { // JSON carries only valid UTF-8
			t.Fatalf("--feedback lost: %s", got)
		}
	})
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestInlineApproval drives `polos run` as if on a terminal: the approval
// is asked inline, a garbage answer is asked again, and a rejection with
// feedback reaches the workflow.
func TestInlineApproval(t *testing.T) {
	srv := testutil.StartServer(t)
	root := t.TempDir()
	testutil.SandboxHost(t, srv.NC, []string{root}, local.New())
	sb, err := dispatch.NewClient(srv.NC, "default", "local")
	if err != nil {
		t.Fatal(err)
	}
	reg := polos.NewRegistry()
	demo.Register(reg, demo.Deps{Sandbox: sb, WorkspaceRoot: root})
	ex, err := executor.New(srv.NC, srv.JS, reg, executor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ex.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	serveControl(t, srv)

	var out, errb lockedBuf
	s := IO{In: strings.NewReader("maybe\nr\nuse printf instead\n"), Out: &out, Err: &errb, InTTY: true}
	code := Main([]string{"polos", "run", "demo", "--input", `{"delay_ms":-1}`, "--server", srv.ClientURL(), "--creds", srv.CredsFile("operator")}, s)
	if code != ExitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	o := out.String()
	for _, want := range []string{"Run a command in the sandbox?", "[a]pprove  [r]eject  a[l]ways allow", "feedback", "rejected: use printf instead", "completed", "I did not run anything"} {
		if !strings.Contains(o, want) {
			t.Errorf("transcript lacks %q:\n%s", want, o)
		}
	}
	if strings.Count(o, "[a]pprove") != 2 {
		t.Errorf("a garbage answer should be asked again:\n%s", o)
	}
	if strings.Contains(o, "\033[") {
		t.Errorf("colour when stdout is not a terminal:\n%q", o)
	}
}

// serveControl runs polosd's control service on srv, as polosd does: the
// CLI changes runs only through it.
func serveControl(t *testing.T, srv *testutil.Server) {
	t.Helper()
	cl, err := client.New(srv.NC, "default")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := control.Serve(control.Options{Client: cl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
}

// TestSummaryShowsExecUnconfined: polos status of a run whose sandbox runs
// exec unconfined says so; other runs say nothing about it.
func TestSummaryShowsExecUnconfined(t *testing.T) {
	for _, unconfined := range []bool{true, false} {
		var out bytes.Buffer
		newPrinter(IO{Out: &out}, OutText).Summary(events.Summary{ID: "run_x", Status: events.StatusCompleted, ExecUnconfined: unconfined})
		if got := strings.Contains(out.String(), "exec unconfined"); got != unconfined {
			t.Errorf("unconfined %v: output %q", unconfined, out.String())
		}
	}
}

// TestStoreFaultsExit6: every store fault code, as it arrives from the
// control service (a coded wire error), exits 6.
func TestStoreFaultsExit6(t *testing.T) {
	for _, code := range []perr.Code{protocol.CodeStoreFull, protocol.CodeStoreReadOnly, protocol.CodeStoreNoQuorum, protocol.CodeStoreIO} {
		t.Run(string(code), func(t *testing.T) {
			err := (&protocol.WireError{Code: string(code), Message: "append to run r failed"}).Err(protocol.CodeInternal)
			if got := ExitCode(err); got != ExitStore {
				t.Fatalf("%s: exit %d, want %d", code, got, ExitStore)
			}
		})
	}
}
