package ratelimit_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/ratelimit"
)

// Environment of the executor child processes.
const (
	envChildURL  = "POLOS_RL_CHILD_NATS_URL"
	envChildName = "POLOS_RL_CHILD_NAME"
	childExecs   = 2
)

func TestMain(m *testing.M) {
	if url := os.Getenv(envChildURL); url != "" {
		runChild(url, os.Getenv(envChildName))
		return
	}
	os.Exit(m.Run())
}

// registerWorkflows: "work" does a step, a durable sleep (the run waits and
// holds no slot), and another step; each step takes a few milliseconds so
// runs overlap.
func registerWorkflows(reg *polos.Registry) {
	polos.Register(reg, "work", func(ctx polos.Context, ms int) (int, error) {
		for i := 0; i < 2; i++ {
			if _, err := polos.Step(ctx, "part-"+strconv.Itoa(i), func(context.Context, string) (int, error) {
				time.Sleep(time.Duration(ms) * time.Millisecond) // the work itself
				return i, nil
			}); err != nil {
				return 0, err
			}
			if i == 0 {
				if err := ctx.Sleep(10 * time.Millisecond); err != nil {
					return 0, err
				}
			}
		}
		return ms, nil
	})
	polos.Register(reg, "quick", func(ctx polos.Context, _ int) (int, error) {
		return polos.Step(ctx, "one", func(context.Context, string) (int, error) { return 1, nil })
	})
}

func runChild(url, name string) {
	nc, err := testutil.ConnectChild(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	js, _ := jetstream.New(nc)
	reg := polos.NewRegistry()
	registerWorkflows(reg)
	var wg sync.WaitGroup
	for i := 0; i < childExecs; i++ {
		ex, err := executor.New(nc, js, reg, executor.Options{ID: fmt.Sprintf("%s-e%d", name, i), Concurrency: 8})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = ex.Run(context.Background()) }()
	}
	wg.Wait()
}

func spawnChild(t *testing.T, srv *testutil.Server, name string) *exec.Cmd {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envChildURL+"="+srv.ClientURL(), envChildName+"="+name, srv.ChildEnv("executor"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })
	return cmd
}

func startExecutors(t *testing.T, srv *testutil.Server, n int) {
	t.Helper()
	reg := polos.NewRegistry()
	registerWorkflows(reg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		ex, err := executor.New(srv.NC, srv.JS, reg, executor.Options{ID: fmt.Sprintf("local-e%d", i), Concurrency: 16})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = ex.Run(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func newClient(t *testing.T, srv *testutil.Server) *client.Client {
	t.Helper()
	cl, err := client.New(srv.NC, "default")
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// hold is a span of time during which a run held a slot. Runs live in
// several streams (docs/adr/0005-run-partitions.md), so spans are measured
// with the writers' timestamps (every process of these tests shares one
// clock): slot_acquired is timestamped after the slot was taken and
// slot_released before it was given back.
type hold struct {
	run        string
	key        string
	start, end int64
}

// holdsOf reads the slot holds of a run from its history: from each
// slot_acquired annotation to the matching slot_released, or, for an
// executor killed while holding, to the last event it wrote before the run
// was taken over. Every event in a span was written while the slot was held,
// so the spans never overlap more than the real holds did.
func holdsOf(hist []events.Event) []hold {
	var out []hold
	var cur *hold
	for _, e := range hist {
		if e.Type == events.Annotation && e.Name == executor.AnnotationSlotAcquired {
			if cur != nil {
				out = append(out, *cur)
			}
			cur = &hold{run: e.RunID, key: e.Attr("key"), start: e.Time, end: e.Time}
			continue
		}
		if cur == nil {
			continue
		}
		cur.end = e.Time
		if e.Type == events.Annotation && e.Name == executor.AnnotationSlotReleased {
			out = append(out, *cur)
			cur = nil
		}
	}
	if cur != nil {
		out = append(out, *cur)
	}
	return out
}

// maxOverlap sweeps spans in time order and returns the most that were
// open at once.
func maxOverlap(hs []hold) int {
	type edge struct {
		seq  int64
		open int
	}
	var es []edge
	for _, h := range hs {
		es = append(es, edge{h.start, 1}, edge{h.end + 1, -1})
	}
	sort.Slice(es, func(i, j int) bool {
		if es[i].seq != es[j].seq {
			return es[i].seq < es[j].seq
		}
		return es[i].open < es[j].open // closes first
	})
	cur, best := 0, 0
	for _, e := range es {
		cur += e.open
		best = max(best, cur)
	}
	return best
}

func waitAll(t *testing.T, cl *client.Client, ids []string, timeout time.Duration) {
	t.Helper()
	testutil.CheckFor(t, timeout, 100*time.Millisecond, func() error {
		for _, id := range ids {
			s, err := cl.Status(context.Background(), id)
			if err != nil {
				return err
			}
			if s.Status != events.StatusCompleted {
				return fmt.Errorf("run %s is %s", id, s.Status)
			}
		}
		return nil
	})
}

func allHolds(t *testing.T, cl *client.Client, ids []string) []hold {
	t.Helper()
	var hs []hold
	for _, id := range ids {
		hist, err := cl.History(context.Background(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		h := holdsOf(hist)
		if len(h) == 0 {
			t.Fatalf("run %s has no slot_acquired annotation", id)
		}
		hs = append(hs, h...)
	}
	return hs
}

// TestQueueLimitAcrossProcessesAndKill: 4 executors in 2 processes, a queue
// limit of 2, 50 runs. One process is killed while it holds slots; its slots
// are free within 5 s, every run completes, and the history never shows
// more than 2 runs holding a slot at once.
func TestQueueLimitAcrossProcessesAndKill(t *testing.T) {
	srv := testutil.StartServer(t)
	cl := newClient(t, srv)
	const runs, limit = 50, 2
	ids := make([]string, runs)
	for i := range ids {
		id, _, err := cl.Start(context.Background(), "work", 40, client.StartOptions{Queue: "limited", ConcurrencyLimit: limit})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	victim := spawnChild(t, srv, "victim")
	spawnChild(t, srv, "survivor")
	slots := ratelimit.NewSlots(srv.JS, "default")
	heldBy := func(prefix string) []string {
		st, err := slots.Inspect(context.Background(), "limited", "")
		if err != nil {
			t.Fatal(err)
		}
		var runs []string
		now := time.Now()
		for run, h := range st.Holders {
			if strings.HasPrefix(h.Holder, prefix) && now.Before(h.Expires) {
				runs = append(runs, run)
			}
		}
		return runs
	}
	testutil.CheckFor(t, 60*time.Second, 5*time.Millisecond, func() error {
		if len(heldBy("victim-")) == 0 {
			return fmt.Errorf("the victim process holds no slot yet")
		}
		return nil
	})
	held := heldBy("victim-")
	_ = victim.Process.Signal(syscall.SIGKILL)
	killedAt := time.Now()
	_ = victim.Wait()
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if h := heldBy("victim-"); len(h) > 0 {
			return fmt.Errorf("slots of runs %v still held by the killed process", h)
		}
		return nil
	})
	freed := time.Since(killedAt)
	if freed > 5*time.Second {
		t.Fatalf("slots of the killed process were free only after %s (want <= 5s)", freed)
	}
	t.Logf("killed a process holding slots of %v; free again after %s", held, freed.Round(time.Millisecond))
	waitAll(t, cl, ids, 3*time.Minute)
	hs := allHolds(t, cl, ids)
	got := maxOverlap(hs)
	if got > limit {
		t.Fatalf("history shows %d runs holding a slot at once, limit %d", got, limit)
	}
	if got < limit {
		t.Fatalf("history shows at most %d runs at once: the test did not exercise the limit %d", got, limit)
	}
	t.Logf("%d runs completed; %d slot holds; at most %d at once (limit %d)", runs, len(hs), got, limit)
}

// TestConcurrencyKey: limit 1 per key with keys A and B: one run of each
// key runs at once, never two of the same key.
func TestConcurrencyKey(t *testing.T) {
	srv := testutil.StartServer(t)
	cl := newClient(t, srv)
	startExecutors(t, srv, 3)
	var ids []string
	for i := 0; i < 8; i++ {
		for _, key := range []string{"A", "B"} {
			id, _, err := cl.Start(context.Background(), "work", 30, client.StartOptions{Queue: "per-customer", ConcurrencyLimit: 1, ConcurrencyKey: key})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}
	waitAll(t, cl, ids, 2*time.Minute)
	hs := allHolds(t, cl, ids)
	byKey := map[string][]hold{}
	for _, h := range hs {
		byKey[h.key] = append(byKey[h.key], h)
	}
	for _, key := range []string{"A", "B"} {
		if got := maxOverlap(byKey[key]); got != 1 {
			t.Fatalf("key %s: %d runs at once, want 1", key, got)
		}
	}
	if got := maxOverlap(hs); got != 2 {
		t.Fatalf("keys A and B together: at most %d runs at once, want 2 (one of each)", got)
	}
}
