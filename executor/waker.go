package executor

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

// Waker defaults.
const (
	// DefaultWakeRetryDelay is how long a signal whose run could not be
	// queued waits before it is tried again.
	DefaultWakeRetryDelay = time.Second
)

// Waker makes every recorded signal move its run: it reads each signal
// appended to a run history (a decision, a cancel request, a child's end:
// protocol.SignalEventTypes) through one durable consumer per partition
// (protocol.WakerConsumer) and queues the run, acknowledging the signal
// only once the task is stored. The writer of a signal queues the run too
// (the fast path); both use protocol.WakeDedupe, so the server keeps one
// task. What a writer that gave up or crashed between its two writes left
// behind, the waker finishes: a decision that is recorded always moves
// its run (issue 15, docs/adr/0011-signals-wake-runs.md).
//
// Under failure: a waker that dies before its ack has the signal
// redelivered (to itself after a restart or another polosd's waker) after
// protocol.DefaultWakerAckWait; queuing twice is harmless (de-duplicated,
// and an advance of a run with nothing to do changes nothing). A store that
// refuses the task has the signal retried every DefaultWakeRetryDelay.
type Waker struct {
	js  jetstream.JetStream
	st  *events.Store
	ns  string
	log *slog.Logger
	// OnWake, when set, is called after a run was queued for a signal.
	OnWake func(runID string, seq uint64)
	woken  atomic.Int64
}

// NewWaker returns a waker for namespace ns; call Run.
func NewWaker(st *events.Store, log *slog.Logger) *Waker {
	if log == nil {
		log = slog.Default()
	}
	return &Waker{js: st.JS(), st: st, ns: st.Namespace(), log: log}
}

// Woken is how many signals the waker queued a run for.
func (w *Waker) Woken() int64 { return w.woken.Load() }

// Run reads signals of every partition until ctx ends.
func (w *Waker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, protocol.RunPartitions)
	for p := 0; p < protocol.RunPartitions; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[p] = w.runPartition(ctx, p)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (w *Waker) runPartition(ctx context.Context, p int) error {
	return protocol.PullEach(ctx, w.js, protocol.RunsStreamName(p), protocol.WakerConsumer(w.ns, p), func(msg jetstream.Msg) { w.wake(ctx, msg) })
}

func (w *Waker) wake(ctx context.Context, msg jetstream.Msg) {
	_, runID, _, ok := protocol.ParseRunSubject(msg.Subject())
	md, err := msg.Metadata()
	if !ok || err != nil || events.ValidateID("run ID", runID) != nil {
		_ = msg.Term() // not a run subject: nothing to wake
		return
	}
	seq := md.Sequence.Stream
	queue := ""
	if first, err := w.st.First(ctx, runID); err == nil && first != nil {
		queue = first.Attr("queue")
	}
	if err := protocol.Enqueue(ctx, w.js, w.ns, queue, runID, "signal", protocol.WakeDedupe(runID, seq)); err != nil {
		w.log.Warn("cannot queue a run for its signal; retrying", "run", runID, "seq", seq, "err", err)
		_ = msg.NakWithDelay(DefaultWakeRetryDelay)
		return
	}
	_ = msg.Ack()
	w.woken.Add(1)
	if w.OnWake != nil {
		w.OnWake(runID, seq)
	}
}
