package tracing

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/protocol"
)

// Follower defaults.
const (
	// DefaultTracedRuns bounds the runs whose open spans are kept in
	// memory. Evicting one is safe: its state is rebuilt from its history
	// when its next event arrives (see Follower).
	DefaultTracedRuns = 10_000
	// DefaultLoadRetryDelay is how long an event whose history could not
	// be read waits before it is tried again.
	DefaultLoadRetryDelay = time.Second
	// DefaultRootLookupTimeout bounds reading a child run's ancestors.
	DefaultRootLookupTimeout = 5 * time.Second
	// DefaultAckInterval is how often the follower flushes the exporter
	// and then acknowledges the messages whose spans it exported.
	DefaultAckInterval = 200 * time.Millisecond
	// DefaultAckBatch flushes and acknowledges early once this many
	// messages wait.
	DefaultAckBatch = 256
	// DefaultFlushTimeout bounds one flush of the exporter.
	DefaultFlushTimeout = 30 * time.Second
	// maxParentDepth bounds the walk from a child run to its root.
	maxParentDepth = 32
)

// Sink receives the spans a Follower derives (an *Exporter, the metrics).
// Flush returns once every span handed to Export was delivered.
type Sink interface {
	Export(Span)
	Flush(ctx context.Context) error
}

// Tee is a Sink that hands every span to each of its sinks.
type Tee []Sink

// Export implements Sink.
func (t Tee) Export(s Span) {
	for _, k := range t {
		k.Export(s)
	}
}

// Flush implements Sink: every sink is flushed, the first error returned.
func (t Tee) Flush(ctx context.Context) error {
	var first error
	for _, k := range t {
		if err := k.Flush(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Follower reads every event appended to the runs of a namespace through
// one durable consumer per run partition (protocol.TelemetryConsumer) and
// exports the spans they end.
//
// Exactly once, under failure: each message exports the spans its own
// events end, and nothing else. When the message at sequence S of run R
// arrives, the follower reads R's history past what it has seen, feeds
// the events up to S to R's state and exports the spans of the events at
// S; what comes before S only rebuilds the state (its own messages were
// handled before, on the same consumer). So a follower restarted, or a
// run evicted from memory, rebuilds the run's state from its history
// without emitting old spans again. A follower that dies after exporting and before acking
// re-exports that message's spans with the same ids; a collector sees one
// span id twice, never two different spans for one step. Messages are
// acknowledged only after the exporter flushed their spans (every
// DefaultAckInterval), so a follower killed with spans still in the
// exporter's buffer loses none: their messages come back after
// protocol.DefaultTelemetryAckWait. A collector that stays unreachable past
// the exporter's own retries loses the spans of that batch (logged); the
// histories keep everything, and HistorySpans derives them again.
type Follower struct {
	st   *events.Store
	ns   string
	sink Sink
	log  *slog.Logger

	mu    sync.Mutex
	runs  map[string]*RunTrace
	order []string // insertion order of runs, for eviction
	roots map[string]string

	exported atomic.Int64

	flushMu        sync.Mutex      // one flush at a time
	pending        []jetstream.Msg // handled, acked after the next flush (under mu)
	flushErrLogged time.Time
}

// NewFollower returns a follower of st's namespace that exports to sink.
func NewFollower(st *events.Store, sink Sink, log *slog.Logger) *Follower {
	if log == nil {
		log = slog.Default()
	}
	return &Follower{st: st, ns: st.Namespace(), sink: sink, log: log, runs: map[string]*RunTrace{}, roots: map[string]string{}}
}

// Exported is how many spans the follower handed to its sink.
func (f *Follower) Exported() int64 { return f.exported.Load() }

// Run creates the tracer's consumers if needed and follows every
// partition until ctx ends.
func (f *Follower) Run(ctx context.Context) error {
	if err := protocol.ProvisionTelemetry(ctx, f.st.JS(), f.ns); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(DefaultAckInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				f.flushAcks()
			}
		}
	}()
	defer f.flushAcks() // what was handled before the end
	errs := make([]error, protocol.RunPartitions)
	for p := 0; p < protocol.RunPartitions; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[p] = protocol.PullEach(ctx, f.st.JS(), protocol.RunsStreamName(p), protocol.TelemetryConsumer(f.ns, p), func(msg jetstream.Msg) { f.handle(ctx, msg) })
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (f *Follower) handle(ctx context.Context, msg jetstream.Msg) {
	_, runID, _, ok := protocol.ParseRunSubject(msg.Subject())
	md, err := msg.Metadata()
	if !ok || err != nil || events.ValidateID("run ID", runID) != nil {
		_ = msg.Term()
		return
	}
	seq := md.Sequence.Stream
	t, last := f.state(runID)
	if last >= seq {
		_ = msg.Ack() // exported with an earlier message's read
		return
	}
	evs, err := f.st.Load(ctx, runID, last)
	if err != nil {
		f.log.Warn("tracing: cannot read a run's history; retrying", "run", runID, "seq", seq, "err", err)
		_ = msg.NakWithDelay(DefaultLoadRetryDelay)
		return
	}
	done := false
	for _, ev := range evs {
		if ev.Seq > seq {
			break // later messages export their own events
		}
		spans := t.Observe(ev)
		if ev.Seq == seq {
			for _, s := range spans {
				f.sink.Export(s)
				f.exported.Add(1)
			}
		}
		last = ev.Seq
		done = done || ev.Type.IsTerminal()
	}
	f.keep(runID, t, last, done)
	f.mu.Lock()
	f.pending = append(f.pending, msg)
	full := len(f.pending) >= DefaultAckBatch
	f.mu.Unlock()
	if full {
		f.flushAcks()
	}
}

// flushAcks flushes the exporter and acknowledges the messages whose spans
// it held.
func (f *Follower) flushAcks() {
	f.flushMu.Lock()
	defer f.flushMu.Unlock()
	f.mu.Lock()
	msgs := f.pending
	f.pending = nil
	f.mu.Unlock()
	if len(msgs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultFlushTimeout)
	defer cancel()
	if err := f.sink.Flush(ctx); err != nil && time.Since(f.flushErrLogged) > time.Minute {
		f.flushErrLogged = time.Now()
		f.log.Warn("tracing: the exporter could not deliver spans; they are dropped (the histories keep the events)", "messages", len(msgs), "err", err)
	}
	for _, m := range msgs {
		_ = m.Ack()
	}
}

// state returns the run's tracing state and the last sequence it has seen
// (0 for a run not in memory: its whole history will be read).
func (f *Follower) state(runID string) (*RunTrace, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.runs[runID]; ok {
		return t, t.lastSeq
	}
	t := NewRunTrace(f.ns, runID)
	t.RootOf = func(parent string) string {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultRootLookupTimeout)
		defer cancel()
		return f.rootOf(ctx, parent)
	}
	return t, 0
}

func (f *Follower) keep(runID string, t *RunTrace, last uint64, done bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if done {
		delete(f.runs, runID)
		return
	}
	t.lastSeq = last
	if _, ok := f.runs[runID]; !ok {
		f.runs[runID] = t
		f.order = append(f.order, runID)
	}
	for len(f.runs) > DefaultTracedRuns && len(f.order) > 0 {
		delete(f.runs, f.order[0])
		f.order = f.order[1:]
	}
	if len(f.order) > 2*DefaultTracedRuns { // drop finished runs from the order
		live := f.order[:0]
		for _, id := range f.order {
			if _, ok := f.runs[id]; ok {
				live = append(live, id)
			}
		}
		f.order = live
	}
}

// rootOf walks from run up its parents to the root of its tree. A parent
// that cannot be read ends the walk there (its spans then start a trace of
// their own rather than none).
func (f *Follower) rootOf(ctx context.Context, run string) string {
	f.mu.Lock()
	r, ok := f.roots[run]
	f.mu.Unlock()
	if ok {
		return r
	}
	cur := run
	for i := 0; i < maxParentDepth; i++ {
		first, err := f.st.First(ctx, cur)
		if err != nil || first == nil || first.Attr("parent") == "" {
			break
		}
		cur = first.Attr("parent")
	}
	f.mu.Lock()
	if len(f.roots) > DefaultTracedRuns {
		f.roots = map[string]string{}
	}
	f.roots[run] = cur
	f.mu.Unlock()
	return cur
}
