package polos_test

import (
	"bufio"
	"context"
	"fmt"
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
	"github.com/polos-run/polos/client"
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
	testutil.RunChildServer()
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

// crashRig runs executor child processes (the test binary, through
// TestMain) of the "crashy" workflow against a server, feeds runs, and
// checks their histories and side effects at the end.
type crashRig struct {
	t        *testing.T
	url      string
	childEnv string // credentials of the children
	cl       *client.Client
	effects  string
	spawned  atomic.Int32
	mu       sync.Mutex
	procs    []crashProc // nil once stopped
	kills    []kill
	ids      []string
	refused  int // starts not acknowledged (a fault was on)
}

type crashProc struct {
	cmd *exec.Cmd
	id  string
}

func newCrashRig(t *testing.T, url, childEnv string, cl *client.Client, executors int) *crashRig {
	r := &crashRig{t: t, url: url, childEnv: childEnv, cl: cl, effects: t.TempDir() + "/effects.log"}
	for i := 0; i < executors; i++ {
		r.procs = append(r.procs, r.spawn())
	}
	t.Cleanup(r.stop)
	return r
}

func (r *crashRig) spawn() crashProc {
	self, _ := os.Executable()
	id := fmt.Sprintf("child-%d", r.spawned.Add(1))
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envChildURL+"="+r.url, envChildFile+"="+r.effects, envChildID+"="+id, r.childEnv)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	return crashProc{cmd, id}
}

// killOne kills a random child with SIGKILL, records it, and starts a
// replacement. It returns false once the rig is stopped.
func (r *crashRig) killOne() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.procs == nil {
		return false
	}
	v := rand.IntN(len(r.procs))
	_ = r.procs[v].cmd.Process.Signal(syscall.SIGKILL)
	r.kills = append(r.kills, kill{victim: r.procs[v].id, at: time.Now()})
	_ = r.procs[v].cmd.Wait()
	r.procs[v] = r.spawn()
	return true
}

func (r *crashRig) nKills() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.kills) }

// stop kills every child (also at cleanup: a failed test leaves none).
func (r *crashRig) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.procs {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
	r.procs = nil
}

// feed starts a run every crashFeedEvery, at least min, until done says so.
func (r *crashRig) feed(min int, done func() bool) {
	for len(r.ids) < min || !done() {
		ctx, cancel := context.WithTimeout(context.Background(), crashStartTimeout)
		id, _, err := r.cl.Start(ctx, "crashy", nil, client.StartOptions{})
		cancel()
		if err != nil {
			// Refused or unanswered while the broker is down: not
			// acknowledged, so not counted (it may still run).
			r.refused++
			continue
		}
		r.ids = append(r.ids, id)
		time.Sleep(crashFeedEvery)
	}
}

// crashFeedEvery paces runs so that faults land on work; crashStartTimeout
// bounds a start while the broker is down.
const (
	crashFeedEvery    = 25 * time.Millisecond
	crashStartTimeout = 2 * time.Second
)

// waitAll waits until every fed run completed; it reports how many did not.
func (r *crashRig) waitAll(timeout time.Duration) {
	r.t.Helper()
	testutil.CheckFor(r.t, timeout, 100*time.Millisecond, func() error {
		done := 0
		for _, id := range r.ids {
			if s, err := r.cl.Status(context.Background(), id); err == nil && s.Status == events.StatusCompleted {
				done++
			}
		}
		if done < len(r.ids) {
			return fmt.Errorf("%d of %d runs completed after %d kills", done, len(r.ids), r.nKills())
		}
		return nil
	})
}

// verify checks every run: result 55, each position completed once, each
// side effect done, and done more than once only when the history names
// the step uncertain (in flight at a fault). It returns the histories and
// how many steps were re-run under an uncertain outcome.
func (r *crashRig) verify() (hists [][]events.Event, uncertainTotal int) {
	t := r.t
	lines := map[string]int{}
	f, _ := os.Open(r.effects)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines[strings.TrimSpace(sc.Text())]++
	}
	f.Close()
	for _, id := range r.ids {
		hist, err := r.cl.History(context.Background(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		hists = append(hists, hist)
		if s := events.Summarize(hist); string(s.Result) != "55" {
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
	// Every history verifies: chain, index tip, streams (polos verify --all).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := r.cl.VerifyAll(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("histories do not verify after the faults: %+v", rep)
	}
	return hists, uncertainTotal
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
	cl, _ := newClient(srv)
	reaper := startReaper(t, srv.NC)
	spans := startSpanCheck(t, srv)
	r := newCrashRig(t, srv.ClientURL(), srv.ChildEnv("executor"), cl, 2)
	stop := make(chan struct{})
	go func() { // the chaos monkey
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(150+rand.IntN(350)) * time.Millisecond):
			}
			if r.nKills() >= size.faults || !r.killOne() {
				return
			}
		}
	}()
	r.feed(size.runs, func() bool { return r.nKills() >= size.faults })
	close(stop)
	r.waitAll(5 * time.Minute)
	r.stop()
	hists, uncertainTotal := r.verify()
	inFlight, recov := affectedByKills(hists, r.kills)
	if len(r.kills) == 0 || inFlight == 0 {
		t.Fatalf("the fault did not land: %d kills, %d steps in flight at a kill", len(r.kills), inFlight)
	}
	// Spans come from the histories, not the replayed code: each once.
	nSpans := spans.check(t, hists)
	reportChaos(t, chaosRow{Fault: "executor kill -9", Runs: len(r.ids), Faults: len(r.kills), InFlight: inFlight,
		Rerun: uncertainTotal, Recovery: recov, Note: fmt.Sprintf("%d runs handed over by the reaper; %d OTLP spans, each once", reaper.Reaped(), nSpans)})
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
		n, rec := affectedBy(hists, k.at, k.at, k.victim)
		inFlight += n
		recovery = append(recovery, rec...)
	}
	return inFlight, recovery
}

// affectedBy finds the runs whose last event before the fault started at
// from was written by writer ("" = anyone) and did not end the run, counts
// those with a step in flight (last event a step start), and returns, for
// each, the time from until (the fault's end) to the run's next event.
func affectedBy(hists [][]events.Event, from, until time.Time, writer string) (inFlight int, recovery []time.Duration) {
	for _, hist := range hists {
		var last, next *events.Event
		for i := range hist {
			if hist[i].Time < from.UnixNano() {
				last = &hist[i]
			} else if next == nil && hist[i].Time >= until.UnixNano() {
				next = &hist[i]
			}
		}
		if last == nil || next == nil || (writer != "" && last.Writer != writer) || last.Type.IsTerminal() {
			continue
		}
		if last.Type == events.StepStarted {
			inFlight++
		}
		recovery = append(recovery, time.Duration(next.Time-until.UnixNano()))
	}
	return inFlight, recovery
}

func newClient(srv *testutil.Server) (*clientT, error) { return clientNew(srv) }
