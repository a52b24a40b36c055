package polos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/replay"
)

type harness struct {
	t   *testing.T
	srv *testutil.Server
	reg *polos.Registry
	cl  *client.Client
	ex  []*executor.Executor
	cxl []context.CancelFunc
	wg  sync.WaitGroup
}

func newHarness(t *testing.T, reg *polos.Registry, executors int) *harness {
	t.Helper()
	h := &harness{t: t, srv: testutil.StartServer(t), reg: reg}
	cl, err := client.New(h.srv.NC, "default")
	if err != nil {
		t.Fatal(err)
	}
	h.cl = cl
	for i := 0; i < executors; i++ {
		h.startExecutor(fmt.Sprintf("exec-%d", i))
	}
	t.Cleanup(h.stopExecutors)
	return h
}

func (h *harness) startExecutor(id string) *executor.Executor {
	ex, err := executor.New(h.srv.NC, h.srv.JS, h.reg, executor.Options{ID: id})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.ex = append(h.ex, ex)
	h.cxl = append(h.cxl, cancel)
	h.wg.Add(1)
	go func() { defer h.wg.Done(); _ = ex.Run(ctx) }()
	return ex
}

func (h *harness) stopExecutors() {
	for _, c := range h.cxl {
		c()
	}
	h.wg.Wait()
	h.cxl = nil
}

func (h *harness) start(wf string, in any) string {
	h.t.Helper()
	id, _, err := h.cl.Start(context.Background(), wf, in, client.StartOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *harness) result(id string) events.Summary {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := h.cl.Result(ctx, id)
	if err != nil {
		h.t.Fatalf("result of %s: %v", id, err)
	}
	return s
}

func (h *harness) waitStatus(id, status string) events.Summary {
	h.t.Helper()
	var s events.Summary
	testutil.CheckFor(h.t, 20*time.Second, 20*time.Millisecond, func() error {
		var err error
		s, err = h.cl.Status(context.Background(), id)
		if err != nil {
			return err
		}
		if s.Status != status {
			return fmt.Errorf("run %s is %s, want %s", id, s.Status, status)
		}
		return nil
	})
	return s
}

func (h *harness) history(id string) []events.Event {
	hist, err := h.cl.History(context.Background(), id, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	return hist
}

func count(hist []events.Event, t events.Type) int {
	n := 0
	for _, e := range hist {
		if e.Type == t {
			n++
		}
	}
	return n
}

func TestStepsCompleteAndRecordResults(t *testing.T) {
	reg := polos.NewRegistry()
	var calls atomic.Int32
	polos.Register(reg, "add", func(ctx polos.Context, in []int) (int, error) {
		sum := 0
		for i, v := range in {
			v := v
			got, err := polos.Step(ctx, fmt.Sprintf("add-%d", i), func(context.Context, string) (int, error) {
				calls.Add(1)
				return sum + v, nil
			})
			if err != nil {
				return 0, err
			}
			sum = got
		}
		return sum, nil
	})
	h := newHarness(t, reg, 1)
	id := h.start("add", []int{1, 2, 3, 4})
	s := h.result(id)
	if s.Status != events.StatusCompleted || string(s.Result) != "10" {
		t.Fatalf("got %s %s", s.Status, s.Result)
	}
	if calls.Load() != 4 {
		t.Fatalf("steps ran %d times, want 4", calls.Load())
	}
	// Starting the same ID again returns the existing run.
	id2, created, err := h.cl.Start(context.Background(), "add", []int{9}, client.StartOptions{ID: id})
	if err != nil || created || id2 != id {
		t.Fatalf("restart of same ID: id=%s created=%v err=%v", id2, created, err)
	}
	// Re-advancing a finished run executes nothing.
	if _, err := h.ex[0].Advance(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 4 {
		t.Fatal("a finished run re-executed steps")
	}
}

func TestStepRetriesAreVisibleInHistory(t *testing.T) {
	reg := polos.NewRegistry()
	var attempts atomic.Int32
	polos.Register(reg, "flaky", func(ctx polos.Context, _ struct{}) (string, error) {
		return polos.Step(ctx, "call", func(context.Context, string) (string, error) {
			if attempts.Add(1) < 3 {
				return "", errors.New("transient")
			}
			return "ok", nil
		}, polos.WithRetry(polos.RetryPolicy{MaxAttempts: 5, InitialInterval: 10 * time.Millisecond, Multiplier: 2}))
	})
	polos.Register(reg, "permanent", func(ctx polos.Context, _ struct{}) (string, error) {
		return polos.Step(ctx, "call", func(context.Context, string) (string, error) {
			return "", polos.NonRetryable(errors.New("bad request"))
		})
	})
	h := newHarness(t, reg, 1)
	s := h.result(h.start("flaky", nil))
	if s.Status != events.StatusCompleted {
		t.Fatalf("status %s", s.Status)
	}
	hist := h.history(s.ID)
	if count(hist, events.StepFailed) != 2 || count(hist, events.StepStarted) != 3 {
		t.Fatalf("want 2 failed attempts and 3 starts, got %d / %d", count(hist, events.StepFailed), count(hist, events.StepStarted))
	}
	s = h.result(h.start("permanent", nil))
	if s.Status != events.StatusFailed || !strings.Contains(s.Error.Message, "bad request") {
		t.Fatalf("permanent: %s %+v", s.Status, s.Error)
	}
	if n := count(h.history(s.ID), events.StepStarted); n != 1 {
		t.Fatalf("non-retryable error retried: %d attempts", n)
	}
}

func approvalWorkflow(reg *polos.Registry, ran *atomic.Int32) {
	polos.Register(reg, "approve", func(ctx polos.Context, cmd string) (string, error) {
		if _, err := polos.Step(ctx, "prepare", func(context.Context, string) (bool, error) { ran.Add(1); return true, nil }); err != nil {
			return "", err
		}
		d, err := polos.Suspend[struct {
			Approved bool   `json:"approved"`
			Feedback string `json:"feedback"`
		}](ctx, "approve-cmd", map[string]any{"command": cmd})
		if err != nil {
			return "", err
		}
		if !d.Approved {
			return "rejected: " + d.Feedback, nil
		}
		return polos.Step(ctx, "run", func(context.Context, string) (string, error) { ran.Add(1); return "ran " + cmd, nil })
	})
}

func TestSuspendResumeAndBadDecisions(t *testing.T) {
	reg := polos.NewRegistry()
	var ran atomic.Int32
	approvalWorkflow(reg, &ran)
	h := newHarness(t, reg, 1)
	ctx := context.Background()
	id := h.start("approve", "ls")
	s := h.waitStatus(id, events.StatusWaiting)
	if len(s.Waiting) != 1 || s.Waiting[0].StepKey != "approve-cmd" || s.Waiting[0].Kind != events.WaitApproval {
		t.Fatalf("waiting: %+v", s.Waiting)
	}
	before := len(h.history(id))
	if _, err := h.cl.Resume(ctx, id, "nope", client.Decision{}); perr.CodeOf(err) != client.CodeStepNotWaiting {
		t.Fatalf("unknown step: want STEP_NOT_WAITING, got %v", err)
	}
	if _, err := h.cl.Resume(ctx, "run_missing", "approve-cmd", client.Decision{}); perr.CodeOf(err) != events.CodeRunNotFound {
		t.Fatalf("unknown run: want RUN_NOT_FOUND, got %v", err)
	}
	if len(h.history(id)) != before {
		t.Fatal("a refused decision changed the history")
	}
	// Two concurrent decisions: exactly one wins.
	var wins, already atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := h.cl.Resume(ctx, id, "approve-cmd", client.Decision{Data: json.RawMessage(`{"approved":true}`), DecidedBy: fmt.Sprint("user", i)})
			switch perr.CodeOf(err) {
			case "":
				wins.Add(1)
			case client.CodeAlreadyDecided, client.CodeRunFinished:
				already.Add(1)
			default:
				t.Errorf("decision %d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d decisions won, want exactly 1", wins.Load())
	}
	s = h.result(id)
	if string(s.Result) != `"ran ls"` {
		t.Fatalf("result %s", s.Result)
	}
	if ran.Load() != 2 {
		t.Fatalf("steps ran %d times, want 2", ran.Load())
	}
	if _, err := h.cl.Resume(ctx, id, "approve-cmd", client.Decision{}); perr.CodeOf(err) != client.CodeRunFinished {
		t.Fatalf("decision after the end: %v", err)
	}
}

func TestRejectWithFeedback(t *testing.T) {
	reg := polos.NewRegistry()
	var ran atomic.Int32
	approvalWorkflow(reg, &ran)
	h := newHarness(t, reg, 1)
	id := h.start("approve", "rm -rf /")
	h.waitStatus(id, events.StatusWaiting)
	if _, err := h.cl.Resume(context.Background(), id, "approve-cmd", client.Decision{Data: json.RawMessage(`{"approved":false,"feedback":"use a temp dir"}`)}); err != nil {
		t.Fatal(err)
	}
	if s := h.result(id); string(s.Result) != `"rejected: use a temp dir"` {
		t.Fatalf("result %s", s.Result)
	}
}

func TestDeterministicValuesSurviveReplay(t *testing.T) {
	reg := polos.NewRegistry()
	type vals struct {
		Now  time.Time
		UUID string
		Rand uint64
	}
	polos.Register(reg, "vals", func(ctx polos.Context, _ struct{}) ([]vals, error) {
		a := vals{ctx.Now(), ctx.UUID(), ctx.Random()}
		if _, err := polos.Suspend[json.RawMessage](ctx, "pause", nil); err != nil {
			return nil, err
		}
		b := vals{ctx.Now(), ctx.UUID(), ctx.Random()}
		return []vals{a, b}, nil
	})
	h := newHarness(t, reg, 1)
	id := h.start("vals", nil)
	h.waitStatus(id, events.StatusWaiting)
	if _, err := h.cl.Resume(context.Background(), id, "pause", client.Decision{}); err != nil {
		t.Fatal(err)
	}
	s := h.result(id)
	var got []vals
	if err := json.Unmarshal(s.Result, &got); err != nil {
		t.Fatal(err)
	}
	// Values recorded before the suspend must equal what the replay after
	// resume returned (the result is computed in the second execution).
	hist := h.history(id)
	var recorded []string
	for _, e := range hist {
		if e.Type == events.ValueRecorded {
			recorded = append(recorded, string(e.Data))
		}
	}
	if len(recorded) != 6 {
		t.Fatalf("want 6 recorded values, got %d", len(recorded))
	}
	uuid, _ := json.Marshal(got[0].UUID)
	if string(uuid) != recorded[1] || got[0].UUID == got[1].UUID || len(got[0].UUID) != 36 {
		t.Fatalf("uuid not replayed: %v vs %v", got[0].UUID, recorded[1])
	}
}

func TestNonDeterminismParksTheRunWithACodedError(t *testing.T) {
	reg := polos.NewRegistry()
	v1 := func(ctx polos.Context, _ struct{}) (string, error) {
		if _, err := polos.Step(ctx, "charge", func(context.Context, string) (int, error) { return 1, nil }); err != nil {
			return "", err
		}
		_, err := polos.Suspend[json.RawMessage](ctx, "confirm", nil)
		return "v1", err
	}
	v2 := func(ctx polos.Context, _ struct{}) (string, error) {
		if _, err := polos.Step(ctx, "refund", func(context.Context, string) (int, error) { return 1, nil }); err != nil {
			return "", err
		}
		return "v2", nil
	}
	polos.Register(reg, "pay", v1)
	h := newHarness(t, reg, 1)
	id := h.start("pay", nil)
	h.waitStatus(id, events.StatusWaiting)
	polos.Register(reg, "pay", v2) // deploy incompatible code
	if _, err := h.cl.Resume(context.Background(), id, "confirm", client.Decision{}); err != nil {
		t.Fatal(err)
	}
	var s events.Summary
	testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		s, _ = h.cl.Status(context.Background(), id)
		if len(s.Waiting) == 1 && s.Waiting[0].Kind == events.WaitOperator {
			return nil
		}
		return fmt.Errorf("not parked: %+v", s)
	})
	msg := s.Error.Message
	for _, want := range []string{"[POLOS-NONDETERMINISM]", "position 1", `step "charge"`, `step "refund"`, "fix:"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q lacks %q", msg, want)
		}
	}
	// Fix the code, then let the operator retry.
	polos.Register(reg, "pay", v1)
	if _, err := h.cl.Resume(context.Background(), id, s.Waiting[0].StepKey, client.Decision{Data: json.RawMessage(`{"approved":true}`)}); err != nil {
		t.Fatal(err)
	}
	if s := h.result(id); s.Status != events.StatusCompleted || string(s.Result) != `"v1"` {
		t.Fatalf("after fix: %s %s", s.Status, s.Result)
	}
}

func TestSleepIsDurableAcrossBrokerRestart(t *testing.T) {
	reg := polos.NewRegistry()
	polos.Register(reg, "nap", func(ctx polos.Context, _ struct{}) (string, error) {
		if err := ctx.Sleep(1500 * time.Millisecond); err != nil {
			return "", err
		}
		return "rested", nil
	})
	h := newHarness(t, reg, 1)
	id := h.start("nap", nil)
	h.waitStatus(id, events.StatusWaiting)
	// Restart the whole server (and executor) while the run sleeps.
	h.stopExecutors()
	dir := h.srv.Dir
	h.srv.Stop()
	h.srv = testutil.StartServerIn(t, dir)
	cl, _ := client.New(h.srv.NC, "default")
	h.cl = cl
	h.startExecutor("exec-after-restart")
	s := h.result(id)
	if string(s.Result) != `"rested"` {
		t.Fatalf("result %s", s.Result)
	}
	hist := h.history(id)
	set, _ := time.Parse(time.RFC3339Nano, hist[1].Attr("fire_at"))
	if hist[len(hist)-1].At().Before(set) {
		t.Fatal("woke before the timer")
	}
}

func TestCancelWaitingAndRunningRuns(t *testing.T) {
	reg := polos.NewRegistry()
	var ran atomic.Int32
	approvalWorkflow(reg, &ran)
	stepStarted := make(chan struct{}, 1)
	polos.Register(reg, "long", func(ctx polos.Context, _ struct{}) (string, error) {
		return polos.Step(ctx, "wait-forever", func(c context.Context, _ string) (string, error) {
			stepStarted <- struct{}{}
			<-c.Done()
			return "", c.Err()
		}, polos.WithRetry(polos.RetryPolicy{MaxAttempts: 1}))
	})
	h := newHarness(t, reg, 1)
	id := h.start("approve", "x")
	h.waitStatus(id, events.StatusWaiting)
	if err := h.cl.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	h.waitStatus(id, events.StatusCancelled)

	id2 := h.start("long", nil)
	<-stepStarted
	if err := h.cl.Cancel(context.Background(), id2); err != nil {
		t.Fatal(err)
	}
	h.waitStatus(id2, events.StatusCancelled)
	if err := h.cl.Cancel(context.Background(), id2); perr.CodeOf(err) != client.CodeRunFinished {
		t.Fatalf("second cancel: %v", err)
	}
}

func TestChildWorkflowsKeepOrderAndReportErrors(t *testing.T) {
	reg := polos.NewRegistry()
	polos.Register(reg, "square", func(ctx polos.Context, n int) (int, error) {
		if n < 0 {
			return 0, polos.NonRetryable(errors.New("negative input"))
		}
		return polos.Step(ctx, "sq", func(context.Context, string) (int, error) { return n * n, nil })
	})
	polos.Register(reg, "fanout", func(ctx polos.Context, ns []int) ([]string, error) {
		one, err := polos.InvokeAndWait[int](ctx, "square", 7)
		if err != nil {
			return nil, err
		}
		in := make([]any, len(ns))
		for i, n := range ns {
			in[i] = n
		}
		res, err := polos.InvokeAllAndWait[int](ctx, "square", in)
		if err != nil {
			return nil, err
		}
		out := []string{fmt.Sprint(one)}
		for _, r := range res {
			if r.Err != nil {
				out = append(out, "error")
			} else {
				out = append(out, fmt.Sprint(r.Value))
			}
		}
		return out, nil
	})
	h := newHarness(t, reg, 2)
	s := h.result(h.start("fanout", []int{1, 2, -3, 4}))
	if string(s.Result) != `["49","1","4","error","16"]` {
		t.Fatalf("result %s (%s)", s.Result, s.Status)
	}
}

func TestWaitForEventDeliversOnlyEventsAfterRegistration(t *testing.T) {
	reg := polos.NewRegistry()
	polos.Register(reg, "listen", func(ctx polos.Context, _ struct{}) (string, error) {
		return polos.WaitForEvent[string](ctx, "orders.paid", 0)
	})
	polos.Register(reg, "listen-timeout", func(ctx polos.Context, _ struct{}) (string, error) {
		_, err := polos.WaitForEvent[string](ctx, "never", 500*time.Millisecond)
		if perr.CodeOf(err) == replay.CodeWaitTimeout {
			return "timed out", nil
		}
		return "", err
	})
	h := newHarness(t, reg, 1)
	ctx := context.Background()
	if err := h.cl.PublishEvent(ctx, "orders.paid", "too early"); err != nil {
		t.Fatal(err)
	}
	id := h.start("listen", nil)
	h.waitStatus(id, events.StatusWaiting)
	if err := h.cl.PublishEvent(ctx, "orders.paid", "order-42"); err != nil {
		t.Fatal(err)
	}
	if s := h.result(id); string(s.Result) != `"order-42"` {
		t.Fatalf("result %s", s.Result)
	}
	if s := h.result(h.start("listen-timeout", nil)); string(s.Result) != `"timed out"` {
		t.Fatalf("timeout result %s", s.Result)
	}
}

func TestSuspendTimeoutTakesTheTimeoutBranch(t *testing.T) {
	reg := polos.NewRegistry()
	polos.Register(reg, "ask", func(ctx polos.Context, _ struct{}) (string, error) {
		_, err := polos.Suspend[json.RawMessage](ctx, "q", map[string]any{"title": "?"}, polos.SuspendTimeout(700*time.Millisecond))
		if perr.CodeOf(err) == replay.CodeWaitTimeout {
			return "timeout branch", nil
		}
		return "answered", err
	})
	h := newHarness(t, reg, 1)
	id := h.start("ask", nil)
	if s := h.result(id); string(s.Result) != `"timeout branch"` {
		t.Fatalf("result %s", s.Result)
	}
	if _, err := h.cl.Resume(context.Background(), id, "q", client.Decision{}); perr.CodeOf(err) != client.CodeRunFinished {
		t.Fatalf("late decision: %v", err)
	}
}

type clientT = client.Client

func clientNew(srv *testutil.Server) (*client.Client, error) { return client.New(srv.NC, "default") }

func TestLostAcksWriteNoDuplicateEvents(t *testing.T) {
	reg := polos.NewRegistry()
	var ran atomic.Int32
	polos.Register(reg, "ten", func(ctx polos.Context, _ struct{}) (int, error) {
		for i := 0; i < 10; i++ {
			if _, err := polos.Step(ctx, fmt.Sprint("s", i), func(context.Context, string) (int, error) { ran.Add(1); return i, nil }); err != nil {
				return 0, err
			}
		}
		return 10, nil
	})
	h := newHarness(t, reg, 0)
	ex := h.startExecutor("lossy")
	var n atomic.Int32
	ex.Store().DropAcks(func() bool { return n.Add(1)%3 == 0 }) // every third ack is lost
	ids := []string{h.start("ten", nil), h.start("ten", nil), h.start("ten", nil)}
	for _, id := range ids {
		if s := h.result(id); s.Status != events.StatusCompleted {
			t.Fatalf("%s: %s", id, s.Status)
		}
		hist := h.history(id)
		seen := map[string]bool{}
		for _, e := range hist {
			k := fmt.Sprint(e.Type, e.Pos, e.Attempt, e.Key)
			if seen[k] {
				t.Fatalf("duplicate event %s in %s", k, id)
			}
			seen[k] = true
		}
		if count(hist, events.StepCompleted) != 10 {
			t.Fatalf("%d completed steps", count(hist, events.StepCompleted))
		}
	}
	if ran.Load() != 30 {
		t.Fatalf("steps ran %d times, want 30", ran.Load())
	}
}

func TestTwoExecutorsRacingOnOneRunKeepHistoryLinear(t *testing.T) {
	reg := polos.NewRegistry()
	var ran sync.Map
	polos.Register(reg, "race", func(ctx polos.Context, _ struct{}) (int, error) {
		for i := 0; i < 20; i++ {
			if _, err := polos.Step(ctx, fmt.Sprint("s", i), func(_ context.Context, key string) (int, error) {
				v, _ := ran.LoadOrStore(key, new(atomic.Int32))
				v.(*atomic.Int32).Add(1)
				return i, nil
			}); err != nil {
				return 0, err
			}
		}
		return 20, nil
	})
	h := newHarness(t, reg, 0)
	a, _ := executor.New(h.srv.NC, h.srv.JS, reg, executor.Options{ID: "A"})
	b, _ := executor.New(h.srv.NC, h.srv.JS, reg, executor.Options{ID: "B"})
	for round := 0; round < 10; round++ {
		id := h.start("race", nil)
		var wg sync.WaitGroup
		for _, ex := range []*executor.Executor{a, b, a, b} {
			wg.Add(1)
			go func(ex *executor.Executor) {
				defer wg.Done()
				for i := 0; i < 5000; i++ {
					o, err := ex.Advance(context.Background(), id)
					if perr.CodeOf(err) == executor.CodeRunBusy {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					if o.Kind.String() == "completed" {
						return
					}
				}
			}(ex)
		}
		wg.Wait()
		hist := h.history(id)
		if s := events.Summarize(hist); s.Status != events.StatusCompleted {
			t.Fatalf("round %d: %s", round, s.Status)
		}
		for i := 1; i < len(hist); i++ {
			// Events of one stored message (a completion riding on the
			// next event) share its sequence and digest.
			sameMsg := hist[i].Seq == hist[i-1].Seq && hist[i].Digest == hist[i-1].Digest
			if hist[i].Seq < hist[i-1].Seq || hist[i].Seq == hist[i-1].Seq && !sameMsg {
				t.Fatalf("history not linear at %d: seq %d after %d", i, hist[i].Seq, hist[i-1].Seq)
			}
		}
		if count(hist, events.StepStarted) != 20 || count(hist, events.StepCompleted) != 20 {
			t.Fatalf("round %d: %d started, %d completed", round, count(hist, events.StepStarted), count(hist, events.StepCompleted))
		}
	}
	ran.Range(func(k, v any) bool {
		if v.(*atomic.Int32).Load() != 1 {
			t.Errorf("step %v executed %d times", k, v.(*atomic.Int32).Load())
		}
		return true
	})
}

func TestStepInFlightAtCrashIsUncertainThenRerunWithSameKey(t *testing.T) {
	reg := polos.NewRegistry()
	var keys []string
	polos.Register(reg, "pay", func(ctx polos.Context, _ struct{}) (string, error) {
		return polos.Step(ctx, "charge", func(_ context.Context, key string) (string, error) {
			keys = append(keys, key)
			return "charged", nil
		})
	})
	polos.Register(reg, "pay-strict", func(ctx polos.Context, _ struct{}) (string, error) {
		_, err := polos.Step(ctx, "charge", func(_ context.Context, key string) (string, error) { return "charged", nil },
			polos.WhenUncertain(polos.FailUncertain))
		if err != nil {
			return "ask a human: " + string(perrCode(err)), nil
		}
		return "charged", nil
	})
	h := newHarness(t, reg, 0)
	ctx := context.Background()
	for _, wf := range []string{"pay", "pay-strict"} {
		id, _, _ := h.cl.Start(ctx, wf, nil, clientStartOpts())
		// A dead executor had started the step: history ends in step_started.
		dead := h.cl.Store().WithWriter("dead-executor")
		last, _ := dead.TipOf(ctx, id)
		if _, err := dead.Append(ctx, id, last, &events.Event{Type: events.StepStarted, Pos: 1, Name: "charge", Attempt: 1, Key: id + ":1"}); err != nil {
			t.Fatal(err)
		}
		h.startExecutor("survivor-" + wf)
		s := h.result(id)
		hist := h.history(id)
		if count(hist, events.StepUncertain) != 1 {
			t.Fatalf("%s: want one step_uncertain, history %v", wf, types(hist))
		}
		switch wf {
		case "pay":
			if string(s.Result) != `"charged"` || len(keys) != 1 || keys[0] != id+":1" {
				t.Fatalf("pay: result %s keys %v", s.Result, keys)
			}
		case "pay-strict":
			if string(s.Result) != `"ask a human: OUTCOME_UNCERTAIN"` {
				t.Fatalf("pay-strict: result %s", s.Result)
			}
		}
		h.stopExecutors()
	}
}

func types(h []events.Event) []events.Type {
	var out []events.Type
	for _, e := range h {
		out = append(out, e.Type)
	}
	return out
}

func perrCode(err error) perr.Code { return perr.CodeOf(err) }

func clientStartOpts() client.StartOptions { return client.StartOptions{} }

func TestDurableCallInDeferWhileParkingIsNotRecorded(t *testing.T) {
	reg := polos.NewRegistry()
	polos.Register(reg, "deferring", func(ctx polos.Context, _ struct{}) (string, error) {
		defer func() {
			_, _ = polos.Step(ctx, "cleanup", func(context.Context, string) (int, error) { return 1, nil })
		}()
		_, err := polos.Suspend[json.RawMessage](ctx, "wait", nil)
		return "done", err
	})
	h := newHarness(t, reg, 1)
	id := h.start("deferring", nil)
	h.waitStatus(id, events.StatusWaiting)
	if _, err := h.cl.Resume(context.Background(), id, "wait", client.Decision{}); err != nil {
		t.Fatal(err)
	}
	s := h.result(id)
	if s.Status != events.StatusCompleted {
		t.Fatalf("status %s: %+v", s.Status, s.Error)
	}
	if n := count(h.history(id), events.StepCompleted); n != 1 {
		t.Fatalf("cleanup recorded %d times, want once (at the real end)", n)
	}
}

// A run timeout counts running time only: time waiting for a person does
// not count, and it is enforced across executions.
func TestRunTimeoutCountsRunningTimeOnly(t *testing.T) {
	reg := polos.NewRegistry()
	polos.Register(reg, "work", func(ctx polos.Context, n int) (int, error) {
		busy := func(context.Context, string) (int, error) { time.Sleep(300 * time.Millisecond); return 1, nil }
		if _, err := polos.Step(ctx, "a", busy); err != nil {
			return 0, err
		}
		if _, err := polos.Suspend[json.RawMessage](ctx, "go-on", nil); err != nil {
			return 0, err
		}
		for i := 0; i < n; i++ {
			if _, err := polos.Step(ctx, "b", busy); err != nil {
				return 0, err
			}
		}
		return n, nil
	})
	h := newHarness(t, reg, 1)
	ctx := context.Background()
	start := func(n int, limit time.Duration) string {
		id, _, err := h.cl.Start(ctx, "work", n, client.StartOptions{RunTimeout: limit})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	ok := start(2, 1500*time.Millisecond)      // 900 ms of work, plus a wait
	tooLong := start(6, 1500*time.Millisecond) // 2.1 s of work
	for _, id := range []string{ok, tooLong} {
		h.waitStatus(id, events.StatusWaiting)
	}
	time.Sleep(2 * time.Second) // the person takes longer than the whole limit
	for _, id := range []string{ok, tooLong} {
		if _, err := h.cl.Resume(ctx, id, "go-on", client.Decision{}); err != nil {
			t.Fatal(err)
		}
	}
	if s := h.result(ok); s.Status != events.StatusCompleted {
		t.Fatalf("run within its running time: %s %+v", s.Status, s.Error)
	}
	s := h.result(tooLong)
	if s.Status != events.StatusFailed || !strings.Contains(s.Error.Message, "RUN_TIMEOUT") {
		t.Fatalf("run over its running time: %s %+v", s.Status, s.Error)
	}
}

// A workflow retry policy restarts the whole run from the top after a
// retryable failure; every attempt stays in the history.
func TestWorkflowRetryStartsAgainFromTheTop(t *testing.T) {
	reg := polos.NewRegistry()
	var attempts, stepRuns atomic.Int32
	polos.Register(reg, "flaky-run", func(ctx polos.Context, _ struct{}) (string, error) {
		if _, err := polos.Step(ctx, "prepare", func(context.Context, string) (int, error) { stepRuns.Add(1); return 1, nil }); err != nil {
			return "", err
		}
		n, err := polos.Step(ctx, "attempt", func(context.Context, string) (int32, error) { return attempts.Add(1), nil })
		if err != nil {
			return "", err
		}
		if n < 3 {
			return "", fmt.Errorf("attempt %d failed", n)
		}
		return fmt.Sprint("succeeded on attempt ", n), nil
	})
	h := newHarness(t, reg, 1)
	id, _, err := h.cl.Start(context.Background(), "flaky-run", nil, client.StartOptions{Retry: &replay.WorkflowRetry{MaxAttempts: 5, InitialInterval: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	s := h.result(id)
	if s.Status != events.StatusCompleted || string(s.Result) != `"succeeded on attempt 3"` {
		t.Fatalf("%s %s %+v", s.Status, s.Result, s.Error)
	}
	hist := h.history(id)
	if count(hist, events.RunRetry) != 2 || stepRuns.Load() != 3 {
		t.Fatalf("%d run_retry events, prepare ran %d times; want 2 and 3", count(hist, events.RunRetry), stepRuns.Load())
	}
	// Without a policy, the first failure is final.
	attempts.Store(0)
	s = h.result(h.start("flaky-run", nil))
	if s.Status != events.StatusFailed {
		t.Fatalf("no policy: %s", s.Status)
	}
}

// TestStepIsOneAppend: a step's completion rides on the next durable call
// (here the next step_started, and run_completed for the last step), so a
// run of n steps stores n+2 messages for 2n+2 events; CompleteNow stores a
// completion on its own.
func TestStepIsOneAppend(t *testing.T) {
	reg := polos.NewRegistry()
	polos.Register(reg, "five", func(ctx polos.Context, now bool) (int, error) {
		for i := 0; i < 5; i++ {
			var opts []polos.StepOption
			if now {
				opts = append(opts, polos.CompleteNow())
			}
			if _, err := polos.Step(ctx, fmt.Sprint("s", i), func(context.Context, string) (int, error) { return i, nil }, opts...); err != nil {
				return 0, err
			}
		}
		return 5, nil
	})
	h := newHarness(t, reg, 1)
	for _, c := range []struct {
		now      bool
		messages int
	}{{false, 7}, {true, 12}} {
		id := h.start("five", c.now)
		if s := h.result(id); s.Status != events.StatusCompleted {
			t.Fatalf("run ended %s", s.Status)
		}
		hist := h.history(id)
		seqs := map[uint64]bool{}
		for _, e := range hist {
			seqs[e.Seq] = true
		}
		if len(hist) != 12 || count(hist, events.StepCompleted) != 5 || len(seqs) != c.messages {
			t.Fatalf("CompleteNow=%v: %d events in %d messages, want 12 in %d", c.now, len(hist), len(seqs), c.messages)
		}
		// Order is history order: each completion precedes the next start.
		for i, e := range hist {
			if e.Type == events.StepCompleted && i+1 < len(hist) && hist[i+1].Type != events.StepStarted && hist[i+1].Type != events.RunCompleted {
				t.Fatalf("completion at %d followed by %s", i, hist[i+1].Type)
			}
		}
	}
}
