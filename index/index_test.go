package index_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
)

const ns = "default"

type world struct {
	srv *testutil.Server
	cl  *client.Client
	st  *events.Store
	kv  jetstream.KeyValue
}

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{srv: testutil.StartServer(t)}
	var err error
	if w.cl, err = client.New(w.srv.NC, ns); err != nil {
		t.Fatal(err)
	}
	if w.st, err = events.NewStore(w.srv.NC, w.srv.JS, ns, "test"); err != nil {
		t.Fatal(err)
	}
	if w.kv, err = w.srv.JS.KeyValue(context.Background(), protocol.RunsKV); err != nil {
		t.Fatal(err)
	}
	return w
}

// runs creates n finished runs of three messages each (start, a step, the
// end with the step's completion riding on it) and, when indexed, their
// index entries as executors write them.
func (w *world) runs(t testing.TB, n int, indexed bool) []string {
	t.Helper()
	ctx := context.Background()
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := range ids {
		ids[i] = fmt.Sprintf("run_%06d", i)
		wg.Add(1)
		sem <- struct{}{}
		go func(id string) {
			defer func() { <-sem; wg.Done() }()
			start := &events.Event{Type: events.RunStarted, Data: []byte(`"in"`), Attrs: map[string]string{"workflow": "wf", "queue": "wf"}}
			step := &events.Event{Type: events.StepStarted, Pos: 1, Name: "s"}
			_, err := w.st.Append(ctx, id, events.Tip{}, start)
			if err == nil {
				_, err = w.st.Append(ctx, id, events.TipOfEvent(start), step)
			}
			if err == nil {
				_, err = w.st.Append(ctx, id, events.TipOfEvent(step), &events.Event{Type: events.RunCompleted, Data: []byte(`"out"`), Prior: []events.Event{{Type: events.StepCompleted, Pos: 1, Name: "s", Data: []byte("1")}}})
			}
			if err == nil && indexed {
				var hist []events.Event
				if hist, err = w.st.Load(ctx, id, 0); err == nil {
					sum := events.Summarize(hist)
					sum.Namespace = ns
					err = index.Put(ctx, w.srv.JS, sum)
				}
			}
			if err != nil {
				errs <- err
			}
		}(ids[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if indexed {
		w.srv.NC.Flush()
		testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			st, err := w.kv.Status(ctx)
			if err != nil || st.Values() < uint64(n) {
				return fmt.Errorf("index has %v entries, want %d (%v)", st, n, err)
			}
			return nil
		})
	}
	return ids
}

func listed(l index.Listing) map[string]events.Summary {
	out := map[string]events.Summary{}
	for _, s := range l.Runs {
		out[s.ID] = s
	}
	return out
}

// TestGarbageInTheIndexHidesNoRun: unreadable entries are listed from the
// run's history and reported; Rebuild rewrites them, deletes entries of
// runs that do not exist, and records damaged histories as damaged.
func TestGarbageInTheIndexHidesNoRun(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	ids := w.runs(t, 6, true)
	put := func(key, value string) {
		if _, err := w.kv.Put(ctx, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	put(protocol.IndexKey(ns, ids[1]), "\x00\xffgarbage")
	put(protocol.IndexKey(ns, ids[2]), `{"id":"run_someone_else","status":"completed"}`)
	put(protocol.IndexKey(ns, ids[3]), `{"id":"`+ids[3]+`","status":"exploded"}`)
	put(protocol.IndexKey(ns, "run_phantom"), `{"id":"run_phantom","status":"running","namespace":"default"}`)
	put(protocol.IndexKey(ns, "run_gone"), "not json")
	put(ns+".=not=a=run", "{}")
	// A history damaged after its run was indexed: the entry says completed.
	if _, err := w.srv.JS.Publish(ctx, protocol.RunSubject(ns, ids[4], "annotation"), []byte("junk")); err != nil {
		t.Fatal(err)
	}

	l, err := w.cl.ListRuns(ctx, client.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := listed(l)
	for _, id := range ids {
		if got[id].Status != events.StatusCompleted {
			t.Errorf("run %s listed as %q, want completed", id, got[id].Status)
		}
	}
	if len(l.Unreadable) != 5 || l.Recovered() != 3 {
		t.Fatalf("unreadable %d, recovered %d, want 5 and 3: %+v", len(l.Unreadable), l.Recovered(), l.Unreadable)
	}
	if p := l.Problem(); !strings.Contains(p, "5 run index entries could not be read") || !strings.Contains(p, "polos index rebuild") {
		t.Fatalf("problem %q", p)
	}

	r, err := index.Rebuild(ctx, w.srv.JS, ns)
	if err != nil {
		t.Fatal(err)
	}
	want := index.Report{Namespace: ns, Runs: 6, Messages: 19, Written: 4, Unchanged: 2, Deleted: 3, BadEntries: 5, DamagedRuns: 1}
	r.Took = 0
	if r != want {
		t.Fatalf("report\n got %+v\nwant %+v", r, want)
	}
	l, err = w.cl.ListRuns(ctx, client.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got = listed(l)
	if len(l.Unreadable) != 0 || len(l.Runs) != 6 {
		t.Fatalf("after rebuild: %d runs, unreadable %+v", len(l.Runs), l.Unreadable)
	}
	if s := got[ids[4]]; s.Status != events.StatusCompleted || s.DamagedMessages != 1 {
		t.Fatalf("the damaged history's entry: %+v", s)
	}
	// A second rebuild finds nothing to do.
	if r, err = index.Rebuild(ctx, w.srv.JS, ns); err != nil || r.Written+r.Deleted != 0 || r.Unchanged != 6 {
		t.Fatalf("second rebuild: %+v %v", r, err)
	}
}

func TestRepairAtStart(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	if r, err := index.RepairAtStart(ctx, w.srv.JS, ns, log); err != nil || r != nil {
		t.Fatalf("an empty deployment needs no rebuild: %+v %v", r, err)
	}
	ids := w.runs(t, 3, false) // histories, no index: lost
	h, err := index.Check(ctx, w.srv.JS, ns)
	if err != nil || !h.NeedsRebuild() || h.Entries != 0 || !h.Histories {
		t.Fatalf("health %+v %v", h, err)
	}
	r, err := index.RepairAtStart(ctx, w.srv.JS, ns, log)
	if err != nil || r == nil || r.Written != 3 {
		t.Fatalf("rebuild of a lost index: %+v %v", r, err)
	}
	if r, err := index.RepairAtStart(ctx, w.srv.JS, ns, log); err != nil || r != nil {
		t.Fatalf("a healthy index needs no rebuild: %+v %v", r, err)
	}
	if _, err := w.kv.Put(ctx, protocol.IndexKey(ns, ids[0]), []byte("{")); err != nil {
		t.Fatal(err)
	}
	if r, err := index.RepairAtStart(ctx, w.srv.JS, ns, log); err != nil || r == nil || r.BadEntries != 1 || r.Written != 1 {
		t.Fatalf("rebuild of a damaged index: %+v %v", r, err)
	}
}

// BenchmarkRebuild measures a rebuild of N runs of three messages each,
// from an empty index (every entry written) and over a healthy one (every
// entry read and compared).
func BenchmarkRebuild(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			w := newWorld(b)
			w.st.EnableGroupCommit() // faster setup
			w.runs(b, n, false)
			ctx := context.Background()
			for _, phase := range []string{"empty-index", "healthy-index"} {
				b.Run(phase, func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						if phase == "empty-index" {
							b.StopTimer()
							st, err := w.srv.JS.Stream(ctx, protocol.KVStream(protocol.RunsKV))
							if err == nil {
								err = st.Purge(ctx)
							}
							if err != nil {
								b.Fatal(err)
							}
							b.StartTimer()
						}
						r, err := index.Rebuild(ctx, w.srv.JS, ns)
						if err != nil {
							b.Fatal(err)
						}
						if r.Runs != n || (phase == "empty-index" && r.Written != n) || (phase == "healthy-index" && r.Unchanged != n) {
							b.Fatalf("report %+v", r)
						}
					}
					b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "runs/s")
				})
			}
		})
	}
}
