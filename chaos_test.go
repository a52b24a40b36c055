package polos_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
)

// The fault suite (`make chaos`, `make chaos FULL=1`): each fault test
// injects one kind of fault, checks that it landed, and reports a row of
// the table in docs/benchmarks.md.
const (
	// EnvChaosFull, set to "1", runs the fault tests at full size.
	EnvChaosFull = "POLOS_CHAOS_FULL"
	// EnvChaosTable names a file each fault test appends its row to
	// (markdown); `make chaos` prints it.
	EnvChaosTable = "POLOS_CHAOS_TABLE"
)

// chaosSizes is how big a fault test is: runs and faults to inject.
type chaosSizes struct {
	runs, faults int
	full         bool
}

// chaosSize picks the reduced size (CI) or, with POLOS_CHAOS_FULL=1, the full one.
func chaosSize(runs, faults, fullRuns, fullFaults int) chaosSizes {
	if os.Getenv(EnvChaosFull) == "1" {
		return chaosSizes{runs: fullRuns, faults: fullFaults, full: true}
	}
	return chaosSizes{runs: runs, faults: faults}
}

// chaosRow is one line of the fault table.
type chaosRow struct {
	Fault    string
	Runs     int
	Faults   int // faults injected
	InFlight int // steps (or decisions) in flight when a fault landed
	Lost     int // acknowledged events lost
	Rerun    int // completed steps run again (flagged uncertain: in flight at a fault)
	Stuck    int // runs that did not finish
	Recovery []time.Duration
	Note     string
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// reportChaos logs the row and appends it to $POLOS_CHAOS_TABLE.
func reportChaos(t *testing.T, r chaosRow) {
	t.Helper()
	line := fmt.Sprintf("| %s | %d | %d | %d | %d | %d | %d | %s | %s | %s |", r.Fault, r.Runs, r.Faults, r.InFlight, r.Lost, r.Rerun, r.Stuck,
		ms(percentile(r.Recovery, 50)), ms(percentile(r.Recovery, 99)), r.Note)
	t.Log("fault table: " + line)
	if path := os.Getenv(EnvChaosTable); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fmt.Fprintln(f, line)
	}
}

// TestChaosBrokerStall: the NATS server process is stopped with SIGSTOP
// for 5 s (5-20 s, three times, at full size) while runs of side-effecting
// steps are in flight, then continued. The stall is waited out: no
// executor is robbed of a run it is advancing, so no completed step is run
// again, and every run finishes.
func TestChaosBrokerStall(t *testing.T) {
	size := chaosSize(40, 1, 200, 3)
	p := testutil.StartChildServerProvisioned(t)
	nc := p.Connect(t, "server")
	js, _ := jetstream.New(nc)
	cl, err := client.New(nc, "default")
	if err != nil {
		t.Fatal(err)
	}
	reaper := executor.NewReaper(nc, js, "default", slog.New(slog.NewTextHandler(io.Discard, nil)))
	rctx, stopReaper := context.WithCancel(context.Background())
	defer stopReaper()
	go func() { _ = reaper.Run(rctx) }()
	r := newCrashRig(t, p.URL, p.ChildEnv("executor"), cl, 2)
	type stall struct{ from, until time.Time }
	var stalls []stall
	var stallsDone atomic.Bool
	go func() {
		defer stallsDone.Store(true)
		for i := 0; i < size.faults; i++ {
			time.Sleep(700 * time.Millisecond)
			d := 5 * time.Second
			if size.full {
				d = time.Duration(5+rand.IntN(16)) * time.Second
			}
			from := time.Now()
			p.Pause()
			time.Sleep(d)
			p.Resume()
			stalls = append(stalls, stall{from, time.Now()})
		}
		time.Sleep(500 * time.Millisecond)
	}()
	r.feed(size.runs, stallsDone.Load)
	r.waitAll(3 * time.Minute)
	r.stop()
	hists, rerun := r.verify()
	inFlight := 0
	var recov []time.Duration
	for _, s := range stalls {
		n, rec := affectedBy(hists, s.from, s.until, "")
		inFlight += n
		recov = append(recov, rec...)
	}
	if len(stalls) != size.faults || inFlight == 0 {
		t.Fatalf("the fault did not land: %d stalls, %d steps in flight at a stall", len(stalls), inFlight)
	}
	reportChaos(t, chaosRow{Fault: "broker SIGSTOP", Runs: len(r.ids), Faults: len(stalls), InFlight: inFlight, Rerun: rerun, Recovery: recov,
		Note: fmt.Sprintf("%d starts refused during a stall; %d runs reaped", r.refused, reaper.Reaped())})
	if rerun != 0 {
		t.Fatalf("%d completed steps ran again after a stall with no process killed", rerun)
	}
}

// TestChaosBrokerKill9: the NATS server process is killed with SIGKILL
// while runs of side-effecting steps are in flight and restarted on the
// same store and port 1-2 s later (three times at full size). With fsync
// on, no acknowledged event is lost: every acknowledged start runs to the
// end, and every completed step is recorded once.
func TestChaosBrokerKill9(t *testing.T) {
	size := chaosSize(40, 1, 200, 5)
	p := testutil.StartChildServerProvisioned(t)
	nc := p.Connect(t, "server")
	js, _ := jetstream.New(nc)
	cl, err := client.New(nc, "default")
	if err != nil {
		t.Fatal(err)
	}
	reaper := executor.NewReaper(nc, js, "default", slog.New(slog.NewTextHandler(io.Discard, nil)))
	rctx, stopReaper := context.WithCancel(context.Background())
	defer stopReaper()
	go func() { _ = reaper.Run(rctx) }()
	r := newCrashRig(t, p.URL, p.ChildEnv("executor"), cl, 2)
	type outage struct{ from, until time.Time }
	var outages []outage
	var done atomic.Bool
	go func() {
		defer done.Store(true)
		for i := 0; i < size.faults; i++ {
			time.Sleep(700 * time.Millisecond)
			from := time.Now()
			p.Kill()
			time.Sleep(time.Duration(1000+rand.IntN(1000)) * time.Millisecond)
			p.Restart()
			outages = append(outages, outage{from, time.Now()})
		}
		time.Sleep(500 * time.Millisecond)
	}()
	r.feed(size.runs, done.Load)
	r.waitAll(3 * time.Minute)
	r.stop()
	hists, rerun := r.verify()
	inFlight := 0
	var recov []time.Duration
	for _, o := range outages {
		n, rec := affectedBy(hists, o.from, o.until, "")
		inFlight += n
		recov = append(recov, rec...)
	}
	if len(outages) != size.faults || inFlight == 0 {
		t.Fatalf("the fault did not land: %d broker kills, %d steps in flight at a kill", len(outages), inFlight)
	}
	reportChaos(t, chaosRow{Fault: "broker kill -9 + restart", Runs: len(r.ids), Faults: len(outages), InFlight: inFlight, Rerun: rerun, Recovery: recov,
		Note: fmt.Sprintf("%d starts refused while down; %d runs reaped", r.refused, reaper.Reaped())})
}

// TestChaosClusterLeaderKill: on a 3-node cluster of real nats-server
// processes with every stream replicated 3 times, the node leading a run
// partition's stream is killed with SIGKILL mid-load (and restarted 2 s
// later, so it rejoins). Elections are waited out: no completed step runs
// again, every run finishes.
func TestChaosClusterLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	size := chaosSize(40, 1, 200, 3)
	srvs := testutil.StartChildCluster(t, 3)
	var urls []string
	for _, s := range srvs {
		urls = append(urls, s.URL)
	}
	url := strings.Join(urls, ",")
	nc, err := nats.Connect(url, protocol.ServiceConnOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	testutil.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return protocol.Provision(ctx, js, "default", 3)
	})
	cl, err := client.New(nc, "default")
	if err != nil {
		t.Fatal(err)
	}
	reaper := executor.NewReaper(nc, js, "default", slog.New(slog.NewTextHandler(io.Discard, nil)))
	rctx, stopReaper := context.WithCancel(context.Background())
	defer stopReaper()
	go func() { _ = reaper.Run(rctx) }()
	r := newCrashRig(t, url, srvs[0].ChildEnv("executor"), cl, 2)
	type outage struct{ from, until time.Time }
	var outages []outage
	var leaders []string
	var done atomic.Bool
	go func() {
		defer done.Store(true)
		for i := 0; i < size.faults; i++ {
			time.Sleep(time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			info, err := js.Stream(ctx, protocol.RunsStreamName(i%protocol.RunPartitions))
			cancel()
			if err != nil || info.CachedInfo().Cluster == nil {
				continue
			}
			leader := info.CachedInfo().Cluster.Leader
			for n, s := range srvs {
				if fmt.Sprintf("n%d", n+1) != leader {
					continue
				}
				from := time.Now()
				s.Kill()
				time.Sleep(2 * time.Second)
				s.Restart()
				outages = append(outages, outage{from, time.Now()})
				leaders = append(leaders, leader)
			}
			time.Sleep(time.Second)
		}
	}()
	r.feed(size.runs, done.Load)
	r.waitAll(5 * time.Minute)
	r.stop()
	hists, rerun := r.verify()
	inFlight := 0
	var recov []time.Duration
	for _, o := range outages {
		n, rec := affectedBy(hists, o.from, o.from, "")
		inFlight += n
		recov = append(recov, rec...)
	}
	if len(outages) != size.faults || inFlight == 0 {
		t.Fatalf("the fault did not land: %d leader kills (%v), %d steps in flight at a kill", len(outages), leaders, inFlight)
	}
	reportChaos(t, chaosRow{Fault: "cluster: stream leader kill -9", Runs: len(r.ids), Faults: len(outages), InFlight: inFlight, Rerun: rerun, Recovery: recov,
		Note: fmt.Sprintf("3 nodes, R3; leaders killed %v; recovery = kill to next event; %d starts refused", leaders, r.refused)})
	if rerun != 0 {
		t.Fatalf("%d completed steps ran again across a leader election with no Polos process killed", rerun)
	}
}
