package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/polos-run/polos/client"
)

// EnvParked sets how many runs TestParkedRunsHoldNothing parks (default
// defaultParked; the measurement uses 10000).
const (
	EnvParked     = "POLOS_HITL_PARKED"
	defaultParked = 500
	decisions     = 200
	// goroutineSlack is the growth tolerated (timers, keep-alive
	// connections); a goroutine per parked run would be n.
	goroutineSlack = 20
	// parkStall: the test fails when no run parks for this long.
	parkStall = 30 * time.Second
)

func rssKiB(t *testing.T) int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func settle() int {
	runtime.GC()
	debug.FreeOSMemory()
	return runtime.NumGoroutine()
}

// TestParkedRunsHoldNothing parks many runs on an approval and checks that
// they hold no goroutine and no executor slot (a new run still completes),
// then measures decision-to-continue latency. The process is polosd's
// shape: embedded NATS server, executor and approval handler in one.
func TestParkedRunsHoldNothing(t *testing.T) {
	n := defaultParked
	if v, err := strconv.Atoi(os.Getenv(EnvParked)); err == nil && v > 0 {
		n = v
	}
	e := newEnv(t)
	ctx := context.Background()
	// Run events as they happen (core NATS view of the history subjects).
	var mu sync.Mutex
	suspended := map[string]bool{}
	completed := map[string]chan struct{}{}
	sub, err := e.srv.NC.Subscribe("polos.default.run.*.*.*", func(m *nats.Msg) {
		parts := strings.Split(m.Subject, ".")
		id, typ := parts[4], parts[5]
		mu.Lock()
		defer mu.Unlock()
		switch typ {
		case "suspended":
			suspended[id] = true
		case "run_completed":
			if ch, ok := completed[id]; ok {
				close(ch)
				delete(completed, id)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// Warm up so the baseline includes the executor's steady state.
	warm := e.start("park", "warm-up")
	if _, err := e.cl.Resume(ctx, warm, execStep, client.Decision{Data: json.RawMessage(`{"approved":true}`)}); err != nil {
		t.Fatal(err)
	}
	e.result(warm)
	g0, rss0 := settle(), rssKiB(t)

	began := time.Now()
	ids := make([]string, n)
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				id, _, err := e.cl.Start(ctx, "park", fmt.Sprintf("deploy %d", i), client.StartOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = id
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	distinct := map[string]bool{}
	for _, id := range ids {
		distinct[id] = true
	}
	if len(distinct) != n {
		t.Fatalf("%d starts returned %d distinct run IDs", n, len(distinct))
	}
	// Fail on a stall, not on a slow machine: the deadline moves while runs
	// keep parking. Progress is logged so a slow CI run shows its rate.
	lastGot, deadline, nextLog := 0, time.Now().Add(parkStall), time.Now().Add(5*time.Second)
	for {
		mu.Lock()
		got := len(suspended)
		mu.Unlock()
		if got >= n+1 { // + the warm-up run
			break
		}
		if got > lastGot {
			lastGot, deadline = got, time.Now().Add(parkStall)
		}
		if time.Now().After(nextLog) {
			t.Logf("%d of %d runs parked after %s", got-1, n, time.Since(began).Round(time.Second))
			nextLog = time.Now().Add(5 * time.Second)
		}
		if time.Now().After(deadline) {
			mu.Lock()
			var missing []string
			for _, id := range ids {
				if !suspended[id] {
					missing = append(missing, id)
				}
			}
			mu.Unlock()
			for _, id := range missing[:min(5, len(missing))] {
				s, err := e.cl.Status(ctx, id)
				t.Logf("not parked: %s status=%s events=%d err=%v", id, s.Status, s.Events, err)
			}
			t.Fatalf("only %d of %d runs parked; none for %s", got-1, n, parkStall)
		}
		time.Sleep(50 * time.Millisecond) // polling a counter, not waiting for an outcome
	}
	parkTime := time.Since(began)
	// Let in-flight work (acks, index writes) finish: poll until the
	// goroutine count is back near the baseline.
	g1 := settle()
	for end := time.Now().Add(20 * time.Second); g1-g0 > goroutineSlack && time.Now().Before(end); g1 = settle() {
		time.Sleep(100 * time.Millisecond)
	}
	rss1 := rssKiB(t)
	t.Logf("parked %d runs in %s (%.0f runs/s)", n, parkTime.Round(time.Millisecond), float64(n)/parkTime.Seconds())
	t.Logf("goroutines: %d before, %d with %d runs parked (delta %d)", g0, g1, n, g1-g0)
	t.Logf("RSS: %d KiB before, %d KiB after (delta %d KiB, %.2f KiB per parked run; server store cache included)", rss0, rss1, rss1-rss0, float64(rss1-rss0)/float64(n))
	if g1-g0 > goroutineSlack {
		t.Fatalf("parked runs hold goroutines: %d before, %d after", g0, g1)
	}
	// No executor slot is held: a new run parks and completes at once.
	fresh := e.start("park", "fresh")
	if _, err := e.cl.Resume(ctx, fresh, execStep, client.Decision{Data: json.RawMessage(`{"approved":true}`)}); err != nil {
		t.Fatal(err)
	}
	e.result(fresh)

	// Decision-to-continue latency: from calling Resume to the run's
	// run_completed event (the workflow returns right after the suspend).
	k := decisions
	if k > n {
		k = n
	}
	lat := make([]time.Duration, 0, k)
	for _, id := range ids[:k] {
		ch := make(chan struct{})
		mu.Lock()
		completed[id] = ch
		mu.Unlock()
		t0 := time.Now()
		if _, err := e.cl.Resume(ctx, id, execStep, client.Decision{Data: json.RawMessage(`{"approved":true}`), DecidedBy: "bench"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
			lat = append(lat, time.Since(t0))
		case <-time.After(30 * time.Second):
			t.Fatalf("run %s did not continue within 30s of its decision", id)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	t.Logf("decision to continue over %d decisions: p50 %s, p99 %s, max %s", len(lat), p(0.50).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
}
