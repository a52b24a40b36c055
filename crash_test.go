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
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/testutil"
)

// Environment of the executor child process used by the crash test.
const (
	envChildURL  = "POLOS_TEST_CHILD_NATS_URL"
	envChildFile = "POLOS_TEST_CHILD_EFFECTS"
	crashSteps   = 10
)

// registerCrashWorkflow: 10 steps, each appends "<idempotency key>\n" to a
// file (a real, non-idempotent side effect) and dawdles a little so kills
// land mid-step.
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
				time.Sleep(time.Duration(rand.IntN(15)) * time.Millisecond)
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
		runChildExecutor(url, os.Getenv(envChildFile))
		return
	}
	os.Exit(m.Run())
}

func runChildExecutor(url, effects string) {
	nc, err := testutil.ConnectChild(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	js, _ := jetstream.New(nc)
	reg := polos.NewRegistry()
	registerCrashWorkflow(reg, effects)
	ex, err := executor.New(nc, js, reg, executor.Options{Concurrency: 8})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = ex.Run(context.Background())
}

// TestKill9ExecutorsMidStep: 50 runs of 10 side-effecting steps while
// executor processes are killed with SIGKILL at random moments. Every run
// completes; every completed step's side effect is in the file once, except
// steps recorded as uncertain (in flight at a kill), which history names by
// their idempotency key.
func TestKill9ExecutorsMidStep(t *testing.T) {
	srv := testutil.StartServer(t)
	effects := t.TempDir() + "/effects.log"
	self, _ := os.Executable()
	spawn := func() *exec.Cmd {
		cmd := exec.Command(self, "-test.run=^$")
		cmd.Env = append(os.Environ(), envChildURL+"="+srv.ClientURL(), envChildFile+"="+effects, srv.ChildEnv("executor"))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	h := &harness{t: t, srv: srv, reg: polos.NewRegistry()}
	h.cl, _ = newClient(srv)
	const runs = 50
	ids := make([]string, runs)
	for i := range ids {
		ids[i] = h.start("crashy", nil)
	}
	var mu sync.Mutex
	procs := []*exec.Cmd{spawn(), spawn()}
	stop := make(chan struct{})
	var endChaosOnce sync.Once
	var kills atomic.Int32
	go func() { // the chaos monkey
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(150+rand.IntN(350)) * time.Millisecond):
			}
			mu.Lock()
			if len(procs) == 0 { // killAll ran: the test is over
				mu.Unlock()
				return
			}
			victim := rand.IntN(len(procs))
			_ = procs[victim].Process.Signal(syscall.SIGKILL)
			_ = procs[victim].Wait()
			kills.Add(1)
			procs[victim] = spawn()
			mu.Unlock()
		}
	}()
	killAll := func() { // also at cleanup, so a failed test leaves no executor behind
		endChaosOnce.Do(func() { close(stop) })
		mu.Lock()
		defer mu.Unlock()
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGKILL)
			_ = p.Wait()
		}
		procs = nil
	}
	t.Cleanup(killAll)
	endChaos := func() { endChaosOnce.Do(func() { close(stop) }) }
	done := 0
	testutil.CheckFor(t, 3*time.Minute, 100*time.Millisecond, func() error {
		if kills.Load() >= 12 {
			endChaos() // enough chaos: let the survivors finish
		}
		done = 0
		for _, id := range ids {
			if s, err := h.cl.Status(context.Background(), id); err == nil && s.Status == events.StatusCompleted {
				done++
			}
		}
		if done < runs {
			return fmt.Errorf("%d of %d runs completed after %d kills", done, runs, kills.Load())
		}
		return nil
	})
	endChaos()
	killAll()
	t.Logf("%d runs completed through %d kill -9s", runs, kills.Load())

	lines := map[string]int{}
	f, _ := os.Open(effects)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines[strings.TrimSpace(sc.Text())]++
	}
	f.Close()
	uncertainTotal := 0
	for _, id := range ids {
		hist := h.history(id)
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
	t.Logf("%d steps were in flight at a kill and were re-run under their idempotency key", uncertainTotal)
}

func newClient(srv *testutil.Server) (*clientT, error) { return clientNew(srv) }
