package ratelimit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/control"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/cli/budgetcmd"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/ratelimit"
)

const tokensPerCall = 300

// registerSpender: five "LLM calls" of 300 tokens each. Before each, a
// step checks the run's budgets (recorded, so replay is deterministic);
// over budget, the run suspends with the budget form and checks again when
// resumed — what the agent loop does.
func registerSpender(reg *polos.Registry, b *ratelimit.Budget, calls *sync.Map) {
	polos.Register(reg, "spender", func(ctx polos.Context, n int) (int64, error) {
		scopes := ratelimit.ScopesOf(ctx.RunID(), ctx.Workflow())
		need := ratelimit.Usage{Tokens: tokensPerCall}
		for i := 0; i < n; i++ {
			for pause := 0; ; pause++ {
				form, err := polos.Step(ctx, fmt.Sprintf("budget-%d-%d", i, pause), func(c context.Context, _ string) (map[string]any, error) {
					err := b.Check(c, scopes, need)
					if ex, over := ratelimit.ExceededOf(err); over {
						var m map[string]any
						return m, jsonInto(ratelimit.BudgetForm(ex), &m)
					}
					return nil, err
				})
				if err != nil {
					return 0, err
				}
				if form == nil {
					break
				}
				if _, err := polos.Suspend[map[string]any](ctx, fmt.Sprintf("budget-%d-%d", i, pause), form); err != nil {
					return 0, err
				}
			}
			if _, err := polos.Step(ctx, "llm-"+strconv.Itoa(i), func(c context.Context, key string) (int, error) {
				calls.Store(key, true)
				return tokensPerCall, b.Add(c, scopes, ratelimit.Usage{Tokens: tokensPerCall, Cost: 0.001})
			}); err != nil {
				return 0, err
			}
		}
		st, err := polos.Step(ctx, "final", func(c context.Context, _ string) (ratelimit.BudgetState, error) {
			return b.Get(c, ratelimit.Scope{Kind: ratelimit.ScopeRun, ID: ctx.RunID()})
		})
		return st.Used.Tokens, err
	})
}

// TestBudgetPausesAndResumesAfterSet: a run with a 1,000-token budget pauses
// before the call that would cross it (the 4th of 300 tokens), stays
// paused, and completes after `polos budget set --run ID --tokens 2000`.
func TestBudgetPausesAndResumesAfterSet(t *testing.T) {
	srv := testutil.StartServer(t)
	cl := newClient(t, srv)
	b := ratelimit.NewBudget(srv.JS, "default")
	reg := polos.NewRegistry()
	var calls sync.Map
	registerSpender(reg, b, &calls)
	ex, err := executor.New(srv.NC, srv.JS, reg, executor.Options{ID: "budget-exec"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ex.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	const runID = "budgeted-run"
	if _, err := b.Set(context.Background(), ratelimit.Scope{Kind: ratelimit.ScopeRun, ID: runID}, ratelimit.BudgetLimit{Tokens: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cl.Start(context.Background(), "spender", 5, client.StartOptions{ID: runID}); err != nil {
		t.Fatal(err)
	}
	var s events.Summary
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		s, err = cl.Status(context.Background(), runID)
		if err != nil || s.Status != events.StatusWaiting {
			return fmt.Errorf("run is %s (%v), want waiting", s.Status, err)
		}
		return nil
	})
	if len(s.Waiting) != 1 || s.Waiting[0].StepKey != "budget-3-0" || !strings.Contains(string(s.Waiting[0].Form), `"_source":"budget"`) {
		t.Fatalf("run waits on %+v, want the budget form of call 4", s.Waiting)
	}
	st, _ := b.Get(context.Background(), ratelimit.Scope{Kind: ratelimit.ScopeRun, ID: runID})
	if st.Used.Tokens != 900 {
		t.Fatalf("paused run used %d tokens, want 900 (3 calls; the 4th would cross 1000)", st.Used.Tokens)
	}
	// The check error itself is coded.
	if err := b.Check(context.Background(), []ratelimit.Scope{{Kind: ratelimit.ScopeRun, ID: runID}}, ratelimit.Usage{Tokens: tokensPerCall}); perr.CodeOf(err) != ratelimit.CodeBudgetExceeded {
		t.Fatalf("check over budget gave %v", err)
	}

	svc, err := control.Serve(control.Options{Client: cl, Budget: b})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	var out bytes.Buffer
	app := &cli.App{Name: "polos", Writer: &out, Commands: []*cli.Command{budgetcmd.Command()}}
	if err := app.Run([]string{"polos", "budget", "set", "--server", srv.ClientURL(), "--creds", srv.CredsFile("operator"), "--run", runID, "--tokens", "2000"}); err != nil {
		t.Fatalf("budget set: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "resumed run "+runID) {
		t.Fatalf("budget set did not resume the run:\n%s", out.String())
	}
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		s, err = cl.Status(context.Background(), runID)
		if err != nil || s.Status != events.StatusCompleted {
			return fmt.Errorf("run is %s (%v), want completed", s.Status, err)
		}
		return nil
	})
	if string(s.Result) != "1500" {
		t.Fatalf("run used %s tokens, want 1500", s.Result)
	}
	out.Reset()
	if err := app.Run([]string{"polos", "budget", "show", "--server", srv.ClientURL(), "--creds", srv.CredsFile("operator")}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "run:"+runID) || !strings.Contains(out.String(), "1500") || !strings.Contains(out.String(), "agent:spender") {
		t.Fatalf("budget show:\n%s", out.String())
	}
	t.Logf("budget show:\n%s", out.String())
}

func jsonInto(raw []byte, v any) error { return json.Unmarshal(raw, v) }
