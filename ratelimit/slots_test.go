package ratelimit_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/ratelimit"
)

func req(run string, ticket uint64) ratelimit.Request {
	return ratelimit.Request{Queue: "q", Limit: 1, Run: run, Holder: "h-" + run, Ticket: ticket}
}

// TestSlotsServeInTicketOrder: with the slot taken, runs asking with tickets
// 5, 3 and 9 wait; when it frees, only the lowest ticket may take it, and
// the others are told how many are ahead.
func TestSlotsServeInTicketOrder(t *testing.T) {
	srv := testutil.StartServer(t)
	s := ratelimit.NewSlots(srv.JS, "default")
	ctx := context.Background()
	first, _, err := s.Acquire(ctx, req("r1", 1))
	if err != nil || first == nil {
		t.Fatalf("first acquire: %v %v", first, err)
	}
	for _, w := range []struct {
		run    string
		ticket uint64
	}{{"r5", 5}, {"r3", 3}, {"r9", 9}} {
		if sl, _, err := s.Acquire(ctx, req(w.run, w.ticket)); err != nil || sl != nil {
			t.Fatalf("%s got a slot over the limit (%v)", w.run, err)
		}
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if sl, ahead, _ := s.Acquire(ctx, req("r9", 9)); sl != nil || ahead != 2 {
		t.Fatalf("r9 jumped the line (slot %v, %d ahead)", sl != nil, ahead)
	}
	if sl, ahead, _ := s.Acquire(ctx, req("r5", 5)); sl != nil || ahead != 1 {
		t.Fatalf("r5 jumped the line (slot %v, %d ahead)", sl != nil, ahead)
	}
	third, _, err := s.Acquire(ctx, req("r3", 3))
	if err != nil || third == nil {
		t.Fatalf("r3, first in line, got no slot: %v", err)
	}
	// The same run asking again (another executor taking it over) keeps it.
	again, _, err := s.Acquire(ctx, ratelimit.Request{Queue: "q", Limit: 1, Run: "r3", Holder: "other", Ticket: 3})
	if err != nil || again == nil {
		t.Fatalf("takeover of r3's slot failed: %v", err)
	}
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if !third.Lost() {
			return fmt.Errorf("the first holder of r3 has not noticed the takeover")
		}
		return nil
	})
	_ = third.Release(ctx) // not its slot any more: a no-op
	st, _ := s.Inspect(ctx, "q", "")
	if h := st.Holders["r3"]; h.Holder != "other" {
		t.Fatalf("r3's slot is held by %q after the old holder released, want other", h.Holder)
	}
	if _, _, err := s.Acquire(ctx, ratelimit.Request{Queue: "q", Limit: 0, Run: "x"}); perr.CodeOf(err) != ratelimit.CodeBadLimit {
		t.Fatalf("limit 0: %v", err)
	}
	if _, _, err := s.Acquire(ctx, ratelimit.Request{Queue: "a.b", Limit: 1, Run: "x"}); err == nil {
		t.Fatal("a queue name with a dot was accepted")
	}
}

// TestSlotsRaceAcrossConnections: 24 goroutines over 3 connections hammer a
// limit of 3; a shared counter of current holders never exceeds it.
func TestSlotsRaceAcrossConnections(t *testing.T) {
	srv := testutil.StartServer(t)
	const limit = 3
	var cur, peak, grants atomic.Int32
	var wg sync.WaitGroup
	for c := 0; c < 3; c++ {
		nc := srv.ConnectAs(t, "executor")
		js, _ := jetstream.New(nc)
		s := ratelimit.NewSlots(js, "default")
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				run := fmt.Sprintf("run-%d-%d", c, g)
				for got := 0; got < 3; {
					sl, _, err := s.Acquire(context.Background(), ratelimit.Request{Queue: "race", Limit: limit, Run: run, Holder: run, Ticket: uint64(c*8 + g)})
					if err != nil {
						t.Error(err)
						return
					}
					if sl == nil {
						time.Sleep(2 * time.Millisecond) // the caller's retry delay
						continue
					}
					n := cur.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					time.Sleep(3 * time.Millisecond) // work while holding
					cur.Add(-1)
					_ = sl.Release(context.Background())
					grants.Add(1)
					got++
				}
			}()
		}
	}
	wg.Wait()
	if peak.Load() > limit {
		t.Fatalf("%d holders at once, limit %d", peak.Load(), limit)
	}
	t.Logf("%d grants, at most %d at once (limit %d)", grants.Load(), peak.Load(), limit)
}

func percentile(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// TestLimitsOverheadReport is the benchmark, in one run: p50/p99 of
// acquiring and releasing a slot and of reserving a rate-limit token, and
// runs/s through a queue with limit 10 next to an unlimited queue.
func TestLimitsOverheadReport(t *testing.T) {
	srv := testutil.StartServer(t)
	ctx := context.Background()
	const n = 300
	s := ratelimit.NewSlots(srv.JS, "default")
	var slotLat, bucketLat []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		sl, _, err := s.Acquire(ctx, ratelimit.Request{Queue: "bench", Limit: 10, Run: fmt.Sprintf("r%d", i), Holder: "bench", Ticket: uint64(i)})
		if err != nil || sl == nil {
			t.Fatalf("acquire: %v", err)
		}
		if err := sl.Release(ctx); err != nil {
			t.Fatal(err)
		}
		slotLat = append(slotLat, time.Since(start))
	}
	b := ratelimit.NewBucket(srv.JS, ratelimit.RateRules{{Provider: "p", Limit: ratelimit.Limit{RequestsPerMinute: 1e9, TokensPerMinute: 1e9}}})
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := b.Reserve(ctx, ratelimit.RateKey{Provider: "p", KeyID: "k", Model: "m"}, 1, 100); err != nil {
			t.Fatal(err)
		}
		bucketLat = append(bucketLat, time.Since(start))
	}
	cl := newClient(t, srv)
	startExecutors(t, srv, 4)
	throughput := func(limit int) float64 {
		const runs = 150
		ids := make([]string, runs)
		start := time.Now()
		for i := range ids {
			id, _, err := cl.Start(ctx, "quick", i, client.StartOptions{Queue: fmt.Sprintf("tp-%d", limit), ConcurrencyLimit: limit})
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = id
		}
		waitAll(t, cl, ids, 2*time.Minute)
		return runs / time.Since(start).Seconds()
	}
	unlimited := throughput(0)
	limited := throughput(10)
	t.Logf("slot acquire+release: p50 %s p99 %s; rate-limit reserve: p50 %s p99 %s (n=%d, one connection, embedded server)",
		percentile(slotLat, 0.5), percentile(slotLat, 0.99), percentile(bucketLat, 0.5), percentile(bucketLat, 0.99), n)
	t.Logf("throughput, 150 one-step runs, 4 executors: unlimited queue %.0f runs/s, queue with limit 10 %.0f runs/s", unlimited, limited)
}
