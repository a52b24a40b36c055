// Package bench measures Polos against the raw JetStream floor in the same
// run, on an embedded server with fsync on every write (unless NoSync, and
// then the report says so). Exposed as `polos bench`.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/embed"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/sandbox/local"
)

// Sizes of one benchmark run.
type Sizes struct {
	FloorAppends   int // sequential raw CAS appends
	Steps          int // sequential durable steps in one run
	StartComplete  int // 1-step runs, start to result
	ConcurrentRuns int // runs stepping at once
	StepsPerRun    int // steps each concurrent run makes
	ReplayEvents   int // history length to read and replay
	Repeats        int // repeats; figures are medians over repeats
	LocalExecs     int // pairs of `exec true` in a local sandbox, confined and unconfined
}

// QuickSizes finish in well under two minutes on a 2-core machine.
var QuickSizes = Sizes{FloorAppends: 500, Steps: 300, StartComplete: 50, ConcurrentRuns: 100, StepsPerRun: 20, ReplayEvents: 10_000, Repeats: 1, LocalExecs: 20}

// FullSizes are larger and repeated.
var FullSizes = Sizes{FloorAppends: 2000, Steps: 1000, StartComplete: 200, ConcurrentRuns: 100, StepsPerRun: 50, ReplayEvents: 10_000, Repeats: 3, LocalExecs: 60}

// Report is the JSON printed by `polos bench -o json`.
type Report struct {
	FloorAppendP50us     float64 `json:"floor_append_p50_us"`
	FloorAppendP99us     float64 `json:"floor_append_p99_us"`
	StepP50us            float64 `json:"step_p50_us"`
	StepP99us            float64 `json:"step_p99_us"`
	IdempotentStepP50us  float64 `json:"idempotent_step_p50_us"`
	StepOverFloor        float64 `json:"step_over_floor"`
	StartCompleteP50us   float64 `json:"start_complete_p50_us"`
	StartCompleteP99us   float64 `json:"start_complete_p99_us"`
	StepsPerSec          float64 `json:"steps_per_s"`
	StepsPerSecSteady    float64 `json:"steps_per_s_mid"`          // same runs, middle half of their steps (no start ramp, no finishing tail)
	StepsPerSecGroup     float64 `json:"steps_per_s_group_commit"` // same, group commit on
	GroupAvgBatch        float64 `json:"group_commit_avg_batch"`   // appends per atomic batch in the steps_per_s runs
	RunPartitions        int     `json:"run_partitions"`
	LoadCPUCores         float64 `json:"load_cpu_cores"` // CPU time / wall time of this process (server included) during the concurrent runs
	StepUnderLoadP50us   float64 `json:"step_under_load_p50_us"`
	StepUnderLoadP99us   float64 `json:"step_under_load_p99_us"`
	FloorAppendsPerSecC  float64 `json:"floor_concurrent_appends_per_s"`
	Replay10kMs          float64 `json:"replay_10k_ms"`
	ReadDirectGet10kMs   float64 `json:"read_direct_get_10k_ms"`
	ReadOrderedCons10kMs float64 `json:"read_ordered_consumer_10k_ms"`
	// One `exec true` in a local sandbox (median), confined (ADR 0111) and
	// unconfined, and their ratio; LocalExecNote says why they are missing.
	LocalExecConfinedMs   float64 `json:"local_exec_confined_ms"`
	LocalExecUnconfinedMs float64 `json:"local_exec_unconfined_ms"`
	LocalExecRatio        float64 `json:"local_exec_confined_ratio"`
	LocalExecNote         string  `json:"local_exec_note,omitempty"`
	Fsync                 bool    `json:"fsync"`
	GoVersion             string  `json:"go_version"`
	NatsServerVersion     string  `json:"nats_server_version"`
	CPUs                  int     `json:"cpus"`
	Repeats               int     `json:"repeats"`
	Note                  string  `json:"note,omitempty"`
}

// Run executes the benchmark on a fresh embedded server in a temp dir.
func Run(ctx context.Context, sz Sizes, noSync bool) (*Report, error) {
	dir, err := os.MkdirTemp("", "polos-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := embed.Start(embed.Options{DataDir: dir, NoSync: noSync})
	if err != nil {
		return nil, err
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := protocol.Provision(ctx, js, "bench", 1); err != nil {
		return nil, err
	}
	reg := polos.NewRegistry()
	var stepDur sync.Map // run -> []time.Duration
	record := func(runID string, d time.Duration) {
		v, _ := stepDur.LoadOrStore(runID, &durs{})
		v.(*durs).add(d)
	}
	polos.Register(reg, "steps", func(ctx polos.Context, in struct {
		N          int
		Idempotent bool
	}) (int, error) {
		for i := 0; i < in.N; i++ {
			var opts []polos.StepOption
			if in.Idempotent {
				opts = append(opts, polos.Idempotent())
			}
			t0 := time.Now()
			if _, err := polos.Step(ctx, "noop", func(context.Context, string) (int, error) { return i, nil }, opts...); err != nil {
				return 0, err
			}
			if !ctx.IsReplaying() {
				record(ctx.RunID(), time.Since(t0))
			}
		}
		return in.N, nil
	})
	ex, err := executor.New(nc, js, reg, executor.Options{Namespace: "bench", Concurrency: 128})
	if err != nil {
		return nil, err
	}
	exCtx, stopEx := context.WithCancel(ctx)
	exDone := make(chan struct{})
	go func() { _ = ex.Run(exCtx); close(exDone) }()
	defer func() { stopEx(); <-exDone }()
	cl, err := client.New(nc, "bench")
	if err != nil {
		return nil, err
	}
	st, _ := events.NewStore(nc, js, "bench", "bench-floor")

	rep := &Report{Fsync: srv.Synced(), GoVersion: runtime.Version(), NatsServerVersion: embed.Version(), CPUs: runtime.NumCPU(), Repeats: sz.Repeats, RunPartitions: protocol.RunPartitions}
	if noSync {
		rep.Note = "fsync OFF: figures are not durable-write figures (benchmark mode only)"
	}
	var floorP50, floorP99, stepP50, stepP99, idemP50, scP50, scP99, sps, spsGroup, avgBatch, loadP50, loadP99, floorC, replayMs, directMs, orderedMs, loadCores, spsSteady []float64
	// A second executor with group commit, for the throughput
	// comparison; it only has work while the first is idle (separate
	// namespace).
	if err := protocol.Provision(ctx, js, "benchgroup", 1); err != nil {
		return nil, err
	}
	exS, err := executor.New(nc, js, reg, executor.Options{Namespace: "benchgroup", Concurrency: 128, GroupCommit: true})
	if err != nil {
		return nil, err
	}
	sCtx, stopS := context.WithCancel(ctx)
	sDone := make(chan struct{})
	go func() { _ = exS.Run(sCtx); close(sDone) }()
	defer func() { stopS(); <-sDone }()
	clS, err := client.New(nc, "benchgroup")
	if err != nil {
		return nil, err
	}
	for rpt := 0; rpt < max(sz.Repeats, 1); rpt++ {
		// 1. Floor: raw sequential CAS appends of one run's subject.
		var floor durs
		var last uint64
		subjRun := fmt.Sprintf("floor%d", rpt)
		for i := 0; i < sz.FloorAppends; i++ {
			t0 := time.Now()
			ack, err := js.Publish(ctx, st.Subject(subjRun, events.StepCompleted), make([]byte, 200),
				jetstream.WithExpectLastSequenceForSubject(last, st.RunFilter(subjRun)))
			if err != nil {
				return nil, err
			}
			floor.add(time.Since(t0))
			last = ack.Sequence
		}
		floorP50 = append(floorP50, floor.pct(50))
		floorP99 = append(floorP99, floor.pct(99))

		// 2. Durable steps inside one running workflow.
		for _, idem := range []bool{false, true} {
			id, _, err := cl.Start(ctx, "steps", map[string]any{"N": sz.Steps, "Idempotent": idem}, client.StartOptions{})
			if err != nil {
				return nil, err
			}
			if _, err := waitResult(ctx, cl, id); err != nil {
				return nil, err
			}
			v, _ := stepDur.Load(id)
			d := v.(*durs)
			if idem {
				idemP50 = append(idemP50, d.pct(50))
			} else {
				stepP50 = append(stepP50, d.pct(50))
				stepP99 = append(stepP99, d.pct(99))
			}
		}

		// 3. Start to complete of a 1-step run through the client.
		var sc durs
		for i := 0; i < sz.StartComplete; i++ {
			t0 := time.Now()
			id, _, err := cl.Start(ctx, "steps", map[string]any{"N": 1}, client.StartOptions{})
			if err != nil {
				return nil, err
			}
			if _, err := waitResult(ctx, cl, id); err != nil {
				return nil, err
			}
			sc.add(time.Since(t0))
		}
		scP50 = append(scP50, sc.pct(50))
		scP99 = append(scP99, sc.pct(99))

		// 4. Throughput: concurrent runs stepping at once, and the floor
		// for the same concurrency.
		// Default configuration and group commit off, in the order A B B A:
		// the later of two back-to-back measurements tends to be faster on
		// this VM, so each figure is the mean of one early and one late run.
		cpu0, wall0 := processCPU(), time.Now()
		ids, rateA1, err := concurrentRuns(ctx, cl, sz)
		if err != nil {
			return nil, err
		}
		loadCores = append(loadCores, round2((processCPU()-cpu0).Seconds()/time.Since(wall0).Seconds()))
		spsSteady = append(spsSteady, midRate(&stepDur, ids))
		var load durs
		for _, id := range ids {
			if v, ok := stepDur.Load(id); ok {
				load.merge(v.(*durs))
			}
		}
		loadP50 = append(loadP50, load.pct(50))
		loadP99 = append(loadP99, load.pct(99))
		before := exS.Store().GroupStats()
		_, rateB1, err := concurrentRuns(ctx, clS, sz)
		if err != nil {
			return nil, err
		}
		_, rateB2, err := concurrentRuns(ctx, clS, sz)
		if err != nil {
			return nil, err
		}
		_, rateA2, err := concurrentRuns(ctx, cl, sz)
		if err != nil {
			return nil, err
		}
		if after := exS.Store().GroupStats(); after.Batches > before.Batches {
			avgBatch = append(avgBatch, float64(after.Grouped-before.Grouped)/float64(after.Batches-before.Batches))
		}
		sps = append(sps, (rateA1+rateA2)/2)
		spsGroup = append(spsGroup, (rateB1+rateB2)/2)
		floorC = append(floorC, concurrentFloor(ctx, js, st, sz.ConcurrentRuns, sz.StepsPerRun, rpt))

		// 5. Read and replay a long history.
		rid := fmt.Sprintf("replay%d", rpt)
		if err := writeHistory(ctx, st, rid, sz.ReplayEvents); err != nil {
			return nil, err
		}
		t0 := time.Now()
		hist, err := st.Load(ctx, rid, 0)
		if err != nil {
			return nil, err
		}
		directMs = append(directMs, ms(time.Since(t0)))
		t0 = time.Now()
		if _, err := st.LoadOrdered(ctx, rid, 0); err != nil {
			return nil, err
		}
		orderedMs = append(orderedMs, ms(time.Since(t0)))
		ex2, _ := executor.New(nc, js, reg, executor.Options{Namespace: "bench", CacheOff: true, ID: "bench-replayer"})
		t0 = time.Now()
		o, err := ex2.Advance(ctx, rid)
		if err != nil {
			return nil, err
		}
		if o.Kind.String() != "completed" || len(hist) != sz.ReplayEvents {
			return nil, fmt.Errorf("replay run ended %s with %d events", o.Kind, len(hist))
		}
		replayMs = append(replayMs, ms(time.Since(t0)))
	}
	rep.FloorAppendP50us, rep.FloorAppendP99us = median(floorP50), median(floorP99)
	rep.StepP50us, rep.StepP99us, rep.IdempotentStepP50us = median(stepP50), median(stepP99), median(idemP50)
	rep.StepOverFloor = round2(rep.StepP50us / rep.FloorAppendP50us)
	rep.StartCompleteP50us, rep.StartCompleteP99us = median(scP50), median(scP99)
	rep.StepsPerSec = round2(median(sps))
	rep.StepsPerSecGroup, rep.GroupAvgBatch = round2(median(spsGroup)), round2(median(avgBatch))
	rep.StepUnderLoadP50us, rep.StepUnderLoadP99us = median(loadP50), median(loadP99)
	rep.FloorAppendsPerSecC = round2(median(floorC))
	rep.LoadCPUCores = median(loadCores)
	rep.StepsPerSecSteady = median(spsSteady)
	rep.Replay10kMs, rep.ReadDirectGet10kMs, rep.ReadOrderedCons10kMs = median(replayMs), median(directMs), median(orderedMs)
	if sz.LocalExecs > 0 {
		if o, err := local.MeasureOverhead(ctx, sz.LocalExecs); err != nil {
			rep.LocalExecNote = err.Error()
		} else {
			rep.LocalExecConfinedMs, rep.LocalExecUnconfinedMs, rep.LocalExecRatio = ms(o.Confined), ms(o.Unconfined), round2(o.Ratio())
		}
	}
	return rep, nil
}

// processCPU is the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// concurrentRuns starts sz.ConcurrentRuns runs of sz.StepsPerRun steps at
// once (each from its own goroutine, as independent callers would) and
// returns their IDs and the steps per second from the first start to the
// last result.
func concurrentRuns(ctx context.Context, cl *client.Client, sz Sizes) ([]string, float64, error) {
	ids := make([]string, sz.ConcurrentRuns)
	errs := make([]error, sz.ConcurrentRuns)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range ids {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ids[i], _, errs[i] = cl.Start(ctx, "steps", map[string]any{"N": sz.StepsPerRun}, client.StartOptions{})
			if errs[i] == nil {
				_, errs[i] = waitResult(ctx, cl, ids[i])
			}
		}(i)
	}
	wg.Wait()
	el := time.Since(t0)
	if err := errors.Join(errs...); err != nil {
		return nil, 0, err
	}
	return ids, float64(sz.ConcurrentRuns*sz.StepsPerRun) / el.Seconds(), nil
}

// writeHistory writes a completed run of n events: run_started, n-2
// idempotent steps, run_completed, as the "steps" workflow would.
func writeHistory(ctx context.Context, st *events.Store, runID string, n int) error {
	steps := n - 2
	in, _ := json.Marshal(map[string]any{"N": steps, "Idempotent": true})
	ev := &events.Event{Type: events.RunStarted, Data: in, Attrs: map[string]string{"workflow": "steps", "queue": "steps"}}
	if _, err := st.Append(ctx, runID, events.Tip{}, ev); err != nil {
		return err
	}
	for i := 0; i < steps; i++ {
		d, _ := json.Marshal(i)
		next := &events.Event{Type: events.StepCompleted, Pos: i + 1, Name: "noop", Attempt: 1, Data: d}
		if _, err := st.Append(ctx, runID, events.TipOfEvent(ev), next); err != nil {
			return err
		}
		ev = next
	}
	out, _ := json.Marshal(steps)
	_, err := st.Append(ctx, runID, events.TipOfEvent(ev), &events.Event{Type: events.RunCompleted, Data: out})
	return err
}

// concurrentFloor: `runs` goroutines each doing `per` sequential raw CAS
// appends on their own subject; total appends/s.
func concurrentFloor(ctx context.Context, js jetstream.JetStream, st *events.Store, runs, per, rpt int) float64 {
	var wg sync.WaitGroup
	var n atomic.Int64
	t0 := time.Now()
	for r := 0; r < runs; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			id := fmt.Sprintf("cfloor%d-%d", rpt, r)
			var last uint64
			for i := 0; i < per*2; i++ { // a step is two appends
				ack, err := js.Publish(ctx, st.Subject(id, events.StepCompleted), make([]byte, 200), jetstream.WithExpectLastSequenceForSubject(last, st.RunFilter(id)))
				if err != nil {
					return
				}
				last = ack.Sequence
				n.Add(1)
			}
		}(r)
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(t0).Seconds()
}

func waitResult(ctx context.Context, cl *client.Client, id string) (events.Summary, error) {
	c, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	s, err := cl.Result(c, id)
	if err == nil && s.Status != events.StatusCompleted {
		err = fmt.Errorf("run %s ended %s", id, s.Status)
	}
	return s, err
}

type durs struct {
	mu   sync.Mutex
	d    []time.Duration
	ends []time.Time // when each measured step ended
}

func (d *durs) add(x time.Duration) {
	d.mu.Lock()
	d.d, d.ends = append(d.d, x), append(d.ends, time.Now())
	d.mu.Unlock()
}

// midRate is the steps per second of the middle half of the steps of ids
// (from the 25th to the 75th percentile of their completion times), which
// leaves out the ramp while runs start and the tail while the last ones
// finish. 0 without enough steps.
func midRate(stepDur *sync.Map, ids []string) float64 {
	var ends []time.Time
	for _, id := range ids {
		if v, ok := stepDur.Load(id); ok {
			d := v.(*durs)
			d.mu.Lock()
			ends = append(ends, d.ends...)
			d.mu.Unlock()
		}
	}
	if len(ends) < 8 {
		return 0
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i].Before(ends[j]) })
	lo, hi := len(ends)/4, len(ends)*3/4
	el := ends[hi].Sub(ends[lo]).Seconds()
	if el <= 0 {
		return 0
	}
	return round2(float64(hi-lo) / el)
}
func (d *durs) merge(o *durs) {
	o.mu.Lock()
	defer o.mu.Unlock()
	d.mu.Lock()
	d.d = append(d.d, o.d...)
	d.mu.Unlock()
}

// pct returns the p-th percentile in microseconds.
func (d *durs) pct(p float64) float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d.d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p / 100)
	return round2(float64(s[i]) / 1e3)
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	return round2(s[len(s)/2])
}

func ms(d time.Duration) float64 { return round2(float64(d) / 1e6) }
func round2(f float64) float64   { return float64(int64(f*100+0.5)) / 100 }
