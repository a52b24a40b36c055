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

// outage is one fault with a start and an end (a stall, a broker down).
type outage struct{ from, until time.Time }

// outageChaos is a fault test of the broker: runs of side-effecting steps
// are fed while inject makes one outage at a time (size.faults of them).
type outageChaos struct {
	fault    string
	size     chaosSizes
	url      string // the server or cluster executors connect to
	childEnv string // their credentials
	nc       *nats.Conn
	// inject makes outage i and returns it (ok false: it could not).
	inject func(i int) (o outage, ok bool)
	// fromStart measures recovery from an outage's start (a cluster keeps
	// serving other streams) rather than its end.
	fromStart bool
	// rerunOK allows completed steps to run again (flagged uncertain).
	rerunOK bool
}

// startReaper runs polosd's reaper on nc until cleanup.
func startReaper(t *testing.T, nc *nats.Conn) *executor.Reaper {
	js, _ := jetstream.New(nc)
	reaper := executor.NewReaper(nc, js, "default", slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = reaper.Run(ctx) }()
	return reaper
}

// run feeds runs while the outages happen, then checks every run (crashRig
// verify), that the faults landed on steps in flight, and reports the row.
func (c outageChaos) run(t *testing.T) {
	cl, err := client.New(c.nc, "default")
	if err != nil {
		t.Fatal(err)
	}
	reaper := startReaper(t, c.nc)
	r := newCrashRig(t, c.url, c.childEnv, cl, 2)
	var outages []outage
	var done atomic.Bool
	go func() {
		defer done.Store(true)
		for i := 0; i < c.size.faults; i++ {
			time.Sleep(700 * time.Millisecond) // let work pile up before the fault
			if o, ok := c.inject(i); ok {
				outages = append(outages, o)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}()
	r.feed(c.size.runs, done.Load)
	r.waitAll(5 * time.Minute)
	r.stop()
	hists, rerun := r.verify()
	inFlight := 0
	var recov []time.Duration
	for _, o := range outages {
		until := o.until
		if c.fromStart {
			until = o.from
		}
		n, rec := affectedBy(hists, o.from, until, "")
		inFlight += n
		recov = append(recov, rec...)
	}
	if len(outages) != c.size.faults || inFlight == 0 {
		t.Fatalf("the fault did not land: %d of %d %s, %d steps in flight at one", len(outages), c.size.faults, c.fault, inFlight)
	}
	reportChaos(t, chaosRow{Fault: c.fault, Runs: len(r.ids), Faults: len(outages), InFlight: inFlight, Rerun: rerun, Recovery: recov,
		Note: fmt.Sprintf("%d starts refused during a fault; %d runs reaped", r.refused, reaper.Reaped())})
	if rerun != 0 && !c.rerunOK {
		t.Fatalf("%d completed steps ran again after %s with no Polos process killed", rerun, c.fault)
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
	outageChaos{fault: "broker SIGSTOP", size: size, url: p.URL, childEnv: p.ChildEnv("executor"), nc: p.Connect(t, "server"),
		inject: func(int) (outage, bool) {
			d := 5 * time.Second
			if size.full {
				d = time.Duration(5+rand.IntN(16)) * time.Second
			}
			from := time.Now()
			p.Pause()
			time.Sleep(d)
			p.Resume()
			return outage{from, time.Now()}, true
		}}.run(t)
}

// TestChaosBrokerKill9: the NATS server process is killed with SIGKILL
// while runs of side-effecting steps are in flight and restarted on the
// same store and port 1-2 s later (five times at full size). With fsync
// on, no acknowledged event is lost: every acknowledged start runs to the
// end, every completed step is recorded once, none runs again.
func TestChaosBrokerKill9(t *testing.T) {
	p := testutil.StartChildServerProvisioned(t)
	outageChaos{fault: "broker kill -9 + restart", size: chaosSize(40, 1, 200, 5), url: p.URL, childEnv: p.ChildEnv("executor"), nc: p.Connect(t, "server"),
		inject: func(int) (outage, bool) {
			from := time.Now()
			p.Kill()
			time.Sleep(time.Duration(1000+rand.IntN(1000)) * time.Millisecond)
			p.Restart()
			return outage{from, time.Now()}, true
		}}.run(t)
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
	outageChaos{fault: "cluster: stream leader kill -9", size: chaosSize(40, 1, 200, 3), url: url, childEnv: srvs[0].ChildEnv("executor"), nc: nc, fromStart: true,
		inject: func(i int) (outage, bool) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			info, err := js.Stream(ctx, protocol.RunsStreamName(i%protocol.RunPartitions))
			cancel()
			if err != nil || info.CachedInfo().Cluster == nil {
				return outage{}, false
			}
			for n, s := range srvs {
				if fmt.Sprintf("n%d", n+1) == info.CachedInfo().Cluster.Leader {
					from := time.Now()
					s.Kill()
					time.Sleep(2 * time.Second)
					s.Restart()
					return outage{from, time.Now()}, true
				}
			}
			return outage{}, false
		}}.run(t)
}
