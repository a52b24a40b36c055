package polos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
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
	"github.com/polos-run/polos/protocol"
)

// startWaker runs the waker polosd's server role runs, until cleanup.
func (h *harness) startWaker() *executor.Waker {
	st, err := events.NewStore(h.srv.NC, h.srv.JS, "default", "polosd-waker")
	if err != nil {
		h.t.Fatal(err)
	}
	w := executor.NewWaker(st, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	h.t.Cleanup(func() { cancel(); <-done })
	return w
}

// TestRecordedDecisionsAlwaysMoveTheirRuns: decisions whose callers give
// up after 1-13 ms (as an HTTP client with a short timeout does), and
// decisions stored with no task at all (a caller that died between its two
// writes), all move their runs: the waker queues a run for every recorded
// signal. Status and the run index agree at the end.
func TestRecordedDecisionsAlwaysMoveTheirRuns(t *testing.T) {
	reg := polos.NewRegistry()
	var ran atomic.Int32
	approvalWorkflow(reg, &ran)
	h := newHarness(t, reg, 2)
	w := h.startWaker()
	const impatient, taskless = 30, 10
	ids := make([]string, impatient+taskless)
	for i := range ids {
		ids[i] = h.start("approve", fmt.Sprint("cmd-", i))
	}
	for _, id := range ids {
		h.waitStatus(id, events.StatusWaiting)
	}
	approve := client.Decision{Data: json.RawMessage(`{"approved":true}`), DecidedBy: "tester"}
	gaveUp, strandedCandidates := 0, 0
	for _, id := range ids[:impatient] {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+rand.IntN(13))*time.Millisecond)
		_, err := h.cl.Resume(ctx, id, "approve-cmd", approve)
		cancel()
		if err == nil {
			continue
		}
		gaveUp++
		if count(h.history(id), events.Resumed) == 1 {
			strandedCandidates++ // recorded, but the caller never saw its task queued
			continue
		}
		switch _, err := h.cl.Resume(context.Background(), id, "approve-cmd", approve); perr.CodeOf(err) {
		case "":
		case client.CodeAlreadyDecided: // the first one landed after all, late
			strandedCandidates++
		default:
			t.Fatalf("second decision of %s: %v", id, err)
		}
	}
	// The fault exactly: the decision is stored and no task is queued.
	st, err := events.NewStore(h.srv.NC, h.srv.JS, "default", "dead-client")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[impatient:] {
		ev := &events.Event{Type: events.Resumed, Key: "approve-cmd", Data: approve.Data, Attrs: map[string]string{"decided_by": "dead-client"}}
		if _, _, err := st.AppendSignal(context.Background(), id, ev, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if s := h.result(id); s.Status != events.StatusCompleted || len(s.Result) < 5 || string(s.Result[:5]) != `"ran ` {
			t.Fatalf("run %s: %s %s", id, s.Status, s.Result)
		}
	}
	testutil.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		list, err := h.cl.List(context.Background(), client.ListFilter{})
		if err != nil {
			return err
		}
		byID := map[string]string{}
		for _, s := range list {
			byID[s.ID] = s.Status
		}
		for _, id := range ids {
			if byID[id] != events.StatusCompleted {
				return fmt.Errorf("run %s is %q in the index, completed in its history", id, byID[id])
			}
		}
		return nil
	})
	t.Logf("%d impatient callers gave up (%d after their decision was stored), %d decisions stored with no task; all %d runs completed; waker queued %d",
		gaveUp, strandedCandidates, taskless, len(ids), w.Woken())
	reportChaos(t, chaosRow{Fault: "decisions by callers that give up", Runs: len(ids), Faults: gaveUp + taskless, InFlight: strandedCandidates + taskless,
		Note: fmt.Sprintf("callers gave up after 1-13 ms; %d decisions stored with no task; the waker queued %d", taskless, w.Woken())})
	if w.Woken() < int64(len(ids)) {
		t.Fatalf("the waker queued %d runs, want one per decision (%d)", w.Woken(), len(ids))
	}
}

// TestChaosExecutorWithoutTheWorkflow: runs start while the only executor
// does not have their workflow (an old build); their tasks are handed back,
// never dropped, and every run finishes once an executor that has it
// starts.
func TestChaosExecutorWithoutTheWorkflow(t *testing.T) {
	size := chaosSize(20, 1, 200, 1)
	var ran atomic.Int32
	h := newHarness(t, polos.NewRegistry(), 0)
	old := h.startExecutor("exec-old-build")
	var ids []string
	for i := 0; i < size.runs; i++ {
		ids = append(ids, h.start("ten_steps", nil))
	}
	testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if got := old.Stats().Retried; got < int64(len(ids)) {
			return fmt.Errorf("old executor handed back %d tasks, want %d", got, len(ids))
		}
		return nil
	})
	if got := old.Stats().Terminated; got != 0 {
		t.Fatalf("the old executor dropped %d tasks", got)
	}
	handedBack := old.Stats().Retried
	h.reg = polos.NewRegistry()
	polos.Register(h.reg, "ten_steps", func(ctx polos.Context, _ struct{}) (int, error) {
		for i := 0; i < 10; i++ {
			if _, err := polos.Step(ctx, fmt.Sprint("s", i), func(context.Context, string) (int, error) { ran.Add(1); return i, nil }); err != nil {
				return 0, err
			}
		}
		return 10, nil
	})
	newAt := time.Now()
	h.startExecutor("exec-new-build")
	var recov []time.Duration
	for _, id := range ids {
		s := h.result(id)
		if s.Status != events.StatusCompleted {
			t.Fatalf("run %s is %s", id, s.Status)
		}
		recov = append(recov, s.UpdatedAt.Sub(newAt))
	}
	if int(ran.Load()) != 10*len(ids) {
		t.Fatalf("steps ran %d times, want %d", ran.Load(), 10*len(ids))
	}
	reportChaos(t, chaosRow{Fault: "executor without the workflow", Runs: len(ids), Faults: len(ids), InFlight: int(handedBack), Recovery: recov,
		Note: "tasks handed back, none dropped; recovery = new executor start to run end"})
}

// TestShutdownHandsRunsOverAtOnce: an executor told to stop (SIGTERM in
// polosd) does not finish its runs: each stops at its next durable call,
// with everything done so far recorded, and another executor continues it
// at once. No step is cut short, run twice, or left uncertain.
func TestShutdownHandsRunsOverAtOnce(t *testing.T) {
	const runs, steps, stepTime = 6, 20, 30 * time.Millisecond
	reg := polos.NewRegistry()
	var mu sync.Mutex
	ran := map[string]int{}
	polos.Register(reg, "long", func(ctx polos.Context, _ struct{}) (int, error) {
		for i := 0; i < steps; i++ {
			if _, err := polos.Step(ctx, fmt.Sprint("s", i), func(_ context.Context, key string) (int, error) {
				mu.Lock()
				ran[key]++
				mu.Unlock()
				time.Sleep(stepTime)
				return i, nil
			}); err != nil {
				return 0, err
			}
		}
		return steps, nil
	})
	h := newHarness(t, reg, 0)
	first, err := executor.New(h.srv.NC, h.srv.JS, reg, executor.Options{ID: "exec-leaving"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	returned := make(chan struct{})
	go func() { _ = first.Run(ctx); close(returned) }()
	var ids []string
	for i := 0; i < runs; i++ {
		ids = append(ids, h.start("long", nil))
	}
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(ran) < runs*3 {
			return fmt.Errorf("%d steps ran", len(ran))
		}
		return nil
	})
	h.startExecutor("exec-staying")
	stoppedAt := time.Now()
	stop()
	<-returned
	took := time.Since(stoppedAt)
	for _, id := range ids {
		if s := h.result(id); s.Status != events.StatusCompleted {
			t.Fatalf("run %s: %s", id, s.Status)
		}
		hist := h.history(id)
		if n := count(hist, events.StepUncertain); n != 0 {
			t.Fatalf("run %s: %d uncertain steps after a graceful stop", id, n)
		}
		moved := false
		for _, e := range hist {
			moved = moved || e.Writer == "exec-staying"
		}
		if !moved {
			t.Fatalf("run %s was finished by the leaving executor, not handed over", id)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for k, n := range ran {
		if n != 1 {
			t.Fatalf("step %s ran %d times", k, n)
		}
	}
	t.Logf("stopping executor returned after %v with %d runs of %d x %v steps in flight", took, runs, steps, stepTime)
	if took > 10*stepTime+time.Second {
		t.Fatalf("stop took %v: runs were finished, not handed over", took)
	}
}

// TestRunsStayOnTheirBuild: a run is pinned to the build of the first
// executor that advanced it. While an executor of that build lives, an
// executor of another build hands the run's tasks back; once none lives,
// the other build continues it. A run whose workflow no live executor has
// is listed by `--stuck` with the reason.
func TestRunsStayOnTheirBuild(t *testing.T) {
	reg := polos.NewRegistry()
	var ran atomic.Int32
	approvalWorkflow(reg, &ran)
	h := newHarness(t, reg, 0)
	start := func(id, build string) (stop func()) {
		ex, err := executor.New(h.srv.NC, h.srv.JS, reg, executor.Options{ID: id, BuildID: build})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = ex.Run(ctx); close(done) }()
		return func() { cancel(); <-done }
	}
	stopOld := start("exec-v1", "v1")
	ids := []string{h.start("approve", "a"), h.start("approve", "b"), h.start("approve", "c")}
	for _, id := range ids {
		if s := h.waitStatus(id, events.StatusWaiting); s.BuildID != "v1" {
			t.Fatalf("run %s pinned to %q, want v1", id, s.BuildID)
		}
	}
	stopNew := start("exec-v2", "v2")
	defer stopNew()
	approve := client.Decision{Data: json.RawMessage(`{"approved":true}`), DecidedBy: "tester"}
	if _, err := h.cl.Resume(context.Background(), ids[0], "approve-cmd", approve); err != nil {
		t.Fatal(err)
	}
	h.result(ids[0])
	for _, e := range h.history(ids[0]) {
		if e.Writer == "exec-v2" {
			t.Fatalf("build v2 advanced a run pinned to v1 while v1 was alive: %s at %d", e.Type, e.Seq)
		}
	}
	stopOld()
	if _, err := h.cl.Resume(context.Background(), ids[1], "approve-cmd", approve); err != nil {
		t.Fatal(err)
	}
	if s := h.result(ids[1]); s.Status != events.StatusCompleted || s.BuildID != "v1" {
		t.Fatalf("run pinned to v1, continued by v2: %s, build %q", s.Status, s.BuildID)
	}

	orphan := h.start("approve_v3_only", nil)
	var stuck []events.Summary
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		var err error
		if stuck, err = h.cl.List(context.Background(), client.ListFilter{Stuck: true}); err != nil {
			return err
		}
		if len(stuck) != 1 || stuck[0].ID != orphan {
			return fmt.Errorf("stuck runs: %+v, want only %s", stuck, orphan)
		}
		return nil
	})
	if !strings.Contains(stuck[0].Stuck, `no live executor serves workflow "approve_v3_only"`) {
		t.Fatalf("reason: %q", stuck[0].Stuck)
	}
}

// consumerCounts is the consumer count of every stream Polos provisions.
func consumerCounts(t *testing.T, h *harness) map[string]int {
	t.Helper()
	out := map[string]int{}
	names := append(protocol.RunsStreams(), protocol.TasksStream, protocol.EventsStream, protocol.ObjectStream(protocol.BlobStore))
	for _, b := range protocol.KVBuckets {
		names = append(names, protocol.KVStream(b))
	}
	for _, n := range names {
		s, err := h.srv.JS.Stream(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out[n] = info.State.Consumers
	}
	return out
}

// TestTenThousandClientCallsLeakNothing: a soak of 10,000 client calls
// (2,000 at CI size)
// (starts, results, statuses, histories short and long, lists, events,
// follows given up early) leaves every stream's consumer count where it
// started and no goroutines behind.
func TestTenThousandClientCallsLeakNothing(t *testing.T) {
	reg := polos.NewRegistry()
	polos.Register(reg, "many", func(ctx polos.Context, n int) (int, error) {
		for i := 0; i < n; i++ {
			if _, err := polos.Step(ctx, fmt.Sprint("s", i), func(context.Context, string) (int, error) { return i, nil }); err != nil {
				return 0, err
			}
		}
		return n, nil
	})
	h := newHarness(t, reg, 1)
	long := h.start("many", 300) // over one direct-get batch: read through an ordered consumer
	h.result(long)
	ctx := context.Background()
	before := consumerCounts(t, h)
	goroutines := runtime.NumGoroutine()
	calls := chaosSize(2_000, 0, 10_000, 0).runs // 10,000 with POLOS_CHAOS_FULL=1
	n := 0
	started := time.Now()
	for n < calls {
		id := h.start("many", 1)
		n++
		for _, call := range []func() error{
			func() error { _, err := h.cl.Result(ctx, id); return err },
			func() error { _, err := h.cl.Status(ctx, id); return err },
			func() error { _, err := h.cl.History(ctx, id, 0); return err },
			func() error { _, err := h.cl.History(ctx, long, 0); return err },
			func() error { _, err := h.cl.Status(ctx, long); return err },
			func() error { _, err := h.cl.List(ctx, client.ListFilter{Limit: 5}); return err },
			func() error { return h.cl.PublishEvent(ctx, "soak", n) },
			func() error {
				fctx, cancel := context.WithTimeout(ctx, 2*time.Millisecond) // a follower that gives up
				defer cancel()
				err := h.cl.Follow(fctx, long, 0, func(events.Event) error { return nil })
				if fctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
					return nil
				}
				return err
			},
			func() error { _, err := h.cl.Status(ctx, "run_unknown"); return ignoreNotFound(err) },
		} {
			if err := call(); err != nil {
				t.Fatalf("call %d: %v", n, err)
			}
			n++
		}
	}
	took := time.Since(started)
	testutil.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if after := consumerCounts(t, h); fmt.Sprint(after) != fmt.Sprint(before) {
			return fmt.Errorf("consumers before %v, after %v", before, after)
		}
		if g := runtime.NumGoroutine(); g > goroutines+10 {
			return fmt.Errorf("%d goroutines before, %d after", goroutines, g)
		}
		return nil
	})
	t.Logf("%d client calls in %v (%.0f calls/s); consumer counts unchanged, goroutines %d -> %d", n, took.Round(time.Millisecond), float64(n)/took.Seconds(), goroutines, runtime.NumGoroutine())
}

func ignoreNotFound(err error) error {
	if perr.CodeOf(err) == events.CodeRunNotFound {
		return nil
	}
	return err
}
