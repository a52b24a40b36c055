package polos_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/testutil"
)

// Environment of the executor child process used by the crash test.
const (
	envChildURL  = "POLOS_TEST_CHILD_NATS_URL"
	envChildFile = "POLOS_TEST_CHILD_EFFECTS"
	envChildID   = "POLOS_TEST_CHILD_ID"
	crashSteps   = 10
)

// registerCrashWorkflow: 10 steps, each appends "<idempotency key>\n" to a
// file (a real, non-idempotent side effect) and dawdles 5-25 ms so that
// most kills land mid-step.
func registerCrashWorkflow(reg *polos.Registry, effects string) {
	polos.Register(reg, "crashy", func(ctx polos.Context, _ struct{}) (int, error) {
		total := 0
		for i := 1; i <= crashSteps; i++ {
			n, err := polos.Step(ctx, fmt.Sprintf("line-%d", i), func(_ context.Context, key string) (int, error) {
				f, err := os.OpenFile(effects, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
				if err != nil {
					return 0, err
				}
				_, err = f.WriteString(key + "\n")
				f.Close()
				time.Sleep(time.Duration(5+rand.IntN(20)) * time.Millisecond)
				return i, err
			})
			if err != nil {
				return 0, err
			}
			total += n
		}
		return total, nil
	})
}

func TestMain(m *testing.M) {
	if url := os.Getenv(envChildURL); url != "" {
		runChildExecutor(url, os.Getenv(envChildFile), os.Getenv(envChildID))
		return
	}
	os.Exit(m.Run())
}

func runChildExecutor(url, effects, id string) {
	nc, err := testutil.ConnectChild(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	js, _ := jetstream.New(nc)
	reg := polos.NewRegistry()
	registerCrashWorkflow(reg, effects)
	ex, err := executor.New(nc, js, reg, executor.Options{ID: id})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = ex.Run(context.Background())
}

// kill is one kill -9 of an executor child: who and when.
type kill struct {
	victim string
	at     time.Time
}

// TestKill9ExecutorsMidStep (chaos: executor kill -9): runs of 10
// side-effecting steps while executor processes are killed with SIGKILL at
// random moments, with polosd's reaper running. Every run completes; every
// completed step's side effect is in the file once, except steps recorded
// as uncertain (in flight at a kill), which history names by their
// idempotency key. The fault is checked to have landed: kills counted, and
// the runs a victim was advancing at its kill (steps in flight) counted
// from the histories; recovery is the time from a kill to the next event
// of each such run.
func TestKill9ExecutorsMidStep(t *testing.T) {
	size := chaosSize(50, 12, 400, 100)
	srv := testutil.StartServer(t)
	effects := t.TempDir() + "/effects.log"
	self, _ := os.Executable()
	var spawned atomic.Int32
	spawn := func() (*exec.Cmd, string) {
		id := fmt.Sprintf("child-%d", spawned.Add(1))
		cmd := exec.Command(self, "-test.run=^$")
		cmd.Env = append(os.Environ(), envChildURL+"="+srv.ClientURL(), envChildFile+"="+effects, envChildID+"="+id, srv.ChildEnv("executor"))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, id
	}
	h := &harness{t: t, srv: srv, reg: polos.NewRegistry()}
	h.cl, _ = newClient(srv)
	reaper := executor.NewReaper(srv.NC, srv.JS, "default", slog.New(slog.NewTextHandler(io.Discard, nil)))
	rctx, stopReaper := context.WithCancel(context.Background())
	defer stopReaper()
	go func() { _ = reaper.Run(rctx) }()
	type proc struct {
		cmd *exec.Cmd
		id  string
	}
	var mu sync.Mutex
	var procs []proc
	for i := 0; i < 2; i++ {
		c, id := spawn()
		procs = append(procs, proc{c, id})
	}
	var kills []kill
	stop := make(chan struct{})
	var endChaosOnce sync.Once
	go func() { // the chaos monkey
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(150+rand.IntN(350)) * time.Millisecond):
			}
			mu.Lock()
			if procs == nil { // killAll ran: the test is over
				mu.Unlock()
				return
			}
			v := rand.IntN(len(procs))
			_ = procs[v].cmd.Process.Signal(syscall.SIGKILL)
			kills = append(kills, kill{victim: procs[v].id, at: time.Now()})
			_ = procs[v].cmd.Wait()
			c, id := spawn()
			procs[v] = proc{c, id}
			mu.Unlock()
		}
	}()
	killAll := func() { // also at cleanup, so a failed test leaves no executor behind
		endChaosOnce.Do(func() { close(stop) })
		mu.Lock()
		defer mu.Unlock()
		for _, p := range procs {
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			_ = p.cmd.Wait()
		}
		procs = nil
	}
	t.Cleanup(killAll)
	endChaos := func() { endChaosOnce.Do(func() { close(stop) }) }
	nKills := func() int { mu.Lock(); defer mu.Unlock(); return len(kills) }
	// Runs keep arriving while the monkey kills, so that kills land on
	// work: at least size.runs, and one every feedEvery until the last kill.
	const feedEvery = 25 * time.Millisecond
	var ids []string
	for len(ids) < size.runs || nKills() < size.faults {
		ids = append(ids, h.start("crashy", nil))
		time.Sleep(feedEvery)
	}
	done := 0
	testutil.CheckFor(t, 5*time.Minute, 100*time.Millisecond, func() error {
		if nKills() >= size.faults {
			endChaos() // enough chaos: let the survivors finish
		}
		done = 0
		for _, id := range ids {
			if s, err := h.cl.Status(context.Background(), id); err == nil && s.Status == events.StatusCompleted {
				done++
			}
		}
		if done < len(ids) {
			return fmt.Errorf("%d of %d runs completed after %d kills", done, len(ids), nKills())
		}
		return nil
	})
	endChaos()
	killAll()

	lines := map[string]int{}
	f, _ := os.Open(effects)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines[strings.TrimSpace(sc.Text())]++
	}
	f.Close()
	uncertainTotal := 0
	var hists [][]events.Event
	for _, id := range ids {
		hist := h.history(id)
		hists = append(hists, hist)
		s := events.Summarize(hist)
		if string(s.Result) != "55" {
			t.Fatalf("run %s result %s", id, s.Result)
		}
		completed := map[int]int{}
		uncertain := map[string]bool{}
		for _, e := range hist {
			switch e.Type {
			case events.StepCompleted:
				completed[e.Pos]++
			case events.StepUncertain:
				uncertain[e.Key] = true
				uncertainTotal++
			}
		}
		for pos := 1; pos <= crashSteps; pos++ {
			if completed[pos] != 1 {
				t.Fatalf("run %s position %d completed %d times", id, pos, completed[pos])
			}
			key := fmt.Sprintf("%s:%d", id, pos)
			switch n := lines[key]; {
			case n == 0:
				t.Fatalf("side effect of %s missing", key)
			case n > 1 && !uncertain[key]:
				t.Fatalf("side effect of %s done %d times but history shows no uncertain outcome", key, n)
			}
		}
		if count(hist, events.RunCompleted) != 1 {
			t.Fatalf("run %s completed %d times", id, count(hist, events.RunCompleted))
		}
	}
	inFlight, recov := affectedByKills(hists, kills)
	if len(kills) == 0 || inFlight == 0 {
		t.Fatalf("the fault did not land: %d kills, %d steps in flight at a kill", len(kills), inFlight)
	}
	reportChaos(t, chaosRow{Fault: "executor kill -9", Runs: len(ids), Faults: len(kills), InFlight: inFlight,
		Rerun: uncertainTotal, Recovery: recov, Note: fmt.Sprintf("%d runs handed over by the reaper", reaper.Reaped())})
	if p99 := percentile(recov, 99); size.full && p99 > time.Second {
		t.Errorf("recovery p99 %v, want <= 1s", p99)
	}
}

// affectedByKills finds, for each kill, the runs whose last event before it
// was written by the victim and did not end the run (the victim was
// advancing them), counts those whose last event was a step start (a step
// in flight), and returns the time from each kill to the next event of each
// affected run.
func affectedByKills(hists [][]events.Event, kills []kill) (inFlight int, recovery []time.Duration) {
	for _, k := range kills {
		at := k.at.UnixNano()
		for _, hist := range hists {
			var last, next *events.Event
			for i := range hist {
				if hist[i].Time < at {
					last = &hist[i]
				} else if next == nil {
					next = &hist[i]
				}
			}
			if last == nil || next == nil || last.Writer != k.victim || last.Type.IsTerminal() {
				continue
			}
			if last.Type == events.StepStarted {
				inFlight++
			}
			recovery = append(recovery, time.Duration(next.Time-at))
		}
	}
	return inFlight, recovery
}

func newClient(srv *testutil.Server) (*clientT, error) { return clientNew(srv) }
