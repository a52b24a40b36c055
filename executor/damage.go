package executor

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/replay"
)

// Damaged runs (docs/adr/0007-unreadable-events.md).
//
// A run whose history holds a message that cannot be read (bytes that do
// not decode, an event of another run, an event out of place) cannot be
// replayed. The executor parks it: it appends nothing, writes the run's
// summary (status damaged, naming the message) to the run index, logs the
// damage once, and terminates the task, so the run costs nothing until an
// operator acts. Every later task for the run is terminated after one
// read. The one thing acted on is a cancel request: cancelling needs no
// replay, so a damaged run with a cancel_requested event is cancelled by
// appending run_cancelled after its last message.

// unknownWorkflowDelay is the hand-back delay of a task delivered for the
// deliveries-th time to an executor without its workflow.
func unknownWorkflowDelay(deliveries uint64) time.Duration {
	d := DefaultBusyDelay
	for i := uint64(1); i < deliveries && d < DefaultUnknownWorkflowDelay; i++ {
		d *= 2
	}
	return min(d, DefaultUnknownWorkflowDelay)
}

// Defaults.
const (
	// DefaultUnknownWorkflowDelay is the longest a task for a workflow this
	// executor does not serve waits before it is offered again. It is not
	// terminated: another executor (or the next deployment) may serve the
	// workflow. When a live executor answers for the workflow
	// (protocol.AnyoneServes) the task is handed back after DefaultBusyDelay,
	// so it reaches that executor within a few short bounces; otherwise the
	// delay doubles from DefaultBusyDelay with each delivery
	// (unknownWorkflowDelay), so a run nobody serves costs one delivery per
	// DefaultUnknownWorkflowDelay, not a busy loop.
	DefaultUnknownWorkflowDelay = 10 * time.Second
	// DefaultReportedSetSize bounds the "already logged" memory of an
	// executor (damaged runs, unknown workflows, runs without history).
	DefaultReportedSetSize = 4096
	// damageKickEvery is how often at most one damaged run is queued for
	// parking by the damage watch (tasks are deduplicated per run and
	// period).
	damageKickEvery = time.Minute
	// damageKickBuffer bounds the damage watch's queue; a run dropped
	// from it is parked by its next task or found by `polos index rebuild`.
	damageKickBuffer = 256
	// damagedCancelAttempts bounds the appends of run_cancelled to a
	// damaged run that keeps receiving messages.
	damagedCancelAttempts = 10
)

// Stats counts what an executor did with its tasks.
type Stats struct {
	Advances   int64 // Advance calls
	Acked      int64 // tasks done
	Retried    int64 // tasks handed back with a delay (Nak)
	Terminated int64 // tasks that will never be redelivered (Term)
}

// Stats returns the executor's counters.
func (e *Executor) Stats() Stats {
	return Stats{Advances: e.stats.advances.Load(), Acked: e.stats.acked.Load(), Retried: e.stats.retried.Load(), Terminated: e.stats.terminated.Load()}
}

// damaged handles a run whose vetted history hist holds unreadable
// messages: it cancels the run when a cancel was requested, and otherwise
// parks it (index, one log line) and returns a CodeRunDamaged error, on
// which the task is terminated.
func (e *Executor) damaged(ctx context.Context, runID string, hist []events.Event) (replay.Outcome, error) {
	e.cache.drop(runID)
	sum := events.Summarize(hist)
	if !events.IsFinal(sum.Status) && hasCancelRequest(hist) {
		term, hist2, err := e.cancelDamaged(ctx, runID, hist)
		if err == nil {
			o := replay.Outcome{Kind: replay.Cancelled, Terminal: term}
			e.afterRun(ctx, hist2, o)
			e.log.Info("damaged run cancelled as requested (its code was not run)", "run", runID, "seq", sum.Damage[0].Seq)
			if e.opts.OnOutcome != nil {
				e.opts.OnOutcome(runID, o)
			}
			return o, nil
		}
		e.log.Warn("cancelling a damaged run failed; it stays parked", "run", runID, "err", err)
	}
	sum.Namespace = e.opts.Namespace
	if err := PutIndex(ctx, e.js, sum); err != nil {
		e.log.Warn("run index update failed (derived; `polos index rebuild` recomputes it)", "run", runID, "err", err)
	}
	err := events.DamagedError(runID, sum.Damage, sum.DamagedMessages)
	d := sum.Damage[0]
	if e.reported.first("damage:"+runID+"@"+strconv.FormatUint(d.Seq, 10), time.Now()) {
		e.log.Error("run damaged: parked until an operator acts; its tasks are terminated",
			"run", runID, "status", sum.Status, "seq", d.Seq, "stream", d.Stream, "partition", d.Partition,
			"size", d.Size, "head", d.Head, "code", d.Code, "damaged_messages", sum.DamagedMessages, "err", err)
	}
	return replay.Outcome{}, err
}

func hasCancelRequest(hist []events.Event) bool {
	for _, e := range hist {
		if e.Type == events.CancelRequest {
			return true
		}
	}
	return false
}

// cancelDamaged appends run_cancelled after the run's last message
// (readable or not: the request was made knowing the history as it is, and
// cancelling replays nothing). Messages that land meanwhile are loaded and
// the append tried again.
func (e *Executor) cancelDamaged(ctx context.Context, runID string, hist []events.Event) (*events.Event, []events.Event, error) {
	first, _ := events.Damages(hist)
	for attempt := 0; attempt < damagedCancelAttempts; attempt++ {
		for i := len(hist) - 1; i >= 0; i-- {
			if hist[i].Type.IsTerminal() {
				return &hist[i], hist, nil // someone finished it first
			}
		}
		ev := &events.Event{Type: events.RunCancelled, Attrs: map[string]string{"damaged_seq": strconv.FormatUint(first[0].Seq, 10)}}
		_, err := e.store.Append(ctx, runID, events.TipOf(hist), ev)
		if err == nil {
			return ev, append(hist, *ev), nil
		}
		switch perr.CodeOf(err) {
		case events.CodeSignalArrived, events.CodeRunDamaged, events.CodeLostOwnership:
		default:
			return nil, hist, err
		}
		fresh, lerr := e.store.Load(ctx, runID, 0)
		if lerr != nil {
			return nil, hist, lerr
		}
		hist = events.Vet(fresh)
	}
	return nil, hist, perr.New(events.CodeStoreIO, "cancel it again later", "run %s kept receiving messages while it was being cancelled", runID)
}

// recheckDamage reloads the run after an advance that lost the run or
// failed: an unreadable message that landed while the code ran shows up as
// a conflict that is neither ours nor a signal. It returns the vetted
// history when it is damaged, nil otherwise.
func (e *Executor) recheckDamage(ctx context.Context, runID string, o replay.Outcome) []events.Event {
	if o.Kind != replay.LostOwnership && o.Kind != replay.Infrastructure {
		return nil
	}
	fresh, err := e.store.Load(ctx, runID, 0)
	if err != nil {
		return nil
	}
	if fresh = events.Vet(fresh); isDamaged(fresh) {
		return fresh
	}
	return nil
}

func isDamaged(hist []events.Event) bool {
	_, total := events.Damages(hist)
	return total > 0
}

// watchDamage notices unreadable messages published on the namespace's run
// subjects while the runs are not being advanced (a waiting run is touched
// only by its next task, which may never come) and queues a task for each
// such run, at most once per damageKickEvery, so the run is parked at once.
// Executors share the watch in a queue group: each message is looked at by
// one of them.
func (e *Executor) watchDamage(ctx context.Context) (stop func(), err error) {
	ns := e.opts.Namespace
	kick := make(chan string, damageKickBuffer)
	sub, err := e.nc.QueueSubscribe(protocol.RunsFilter(ns), protocol.DamageWatchGroup, func(m *nats.Msg) {
		runID := events.RunIDOfSubject(ns, m.Subject)
		if events.ValidateID("run ID", runID) != nil {
			return // not a run's subject: no run to park
		}
		if evs := events.ReadMessage(ns, runID, events.StoredMsg{Subject: m.Subject, Data: m.Data}); evs[0].Type != events.Unreadable {
			return
		}
		select {
		case kick <- runID:
		default:
		}
	})
	if err != nil {
		return nil, perr.Wrap(err, events.CodeStoreIO, "check the NATS connection and the executor's permissions", "cannot watch run subjects")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case runID := <-kick:
				now := time.Now()
				if !e.kicked.first(runID, now) {
					continue
				}
				period := strconv.FormatInt(now.Unix()/int64(damageKickEvery/time.Second), 10)
				if err := protocol.Enqueue(ctx, e.js, ns, "", runID, "damage", "damage:"+runID+":"+period); err != nil && ctx.Err() == nil {
					e.log.Warn("queueing a damaged run failed; its next task parks it", "run", runID, "err", err)
				}
			}
		}
	}()
	return func() { _ = sub.Unsubscribe(); <-done }, nil
}

// onceSet remembers up to max keys, each for ttl (0: until pushed out), so
// that something is logged or done once, not once per redelivery. The
// oldest key goes first when it is full.
type onceSet struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	seen  map[string]time.Time
	order []string
}

func newOnceSet(max int, ttl time.Duration) *onceSet {
	return &onceSet{max: max, ttl: ttl, seen: map[string]time.Time{}}
}

// first reports whether key was not seen (within ttl) and records it.
func (s *onceSet) first(key string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.seen[key]; ok && (s.ttl == 0 || now.Sub(at) < s.ttl) {
		return false
	} else if !ok {
		s.order = append(s.order, key)
	}
	s.seen[key] = now
	for len(s.order) > s.max {
		delete(s.seen, s.order[0])
		s.order = s.order[1:]
	}
	return true
}

// checkIndex compares a history read from the store (not the cache) with
// the run's index entry before the run's code runs: when the index recorded
// more than the history holds (a final status, a later sequence, another
// digest at its sequence: events.CheckIndex), the stream lost the
// history's last messages, and running the code would do their steps again
// and overwrite what the index knew. The run is then parked: logged once,
// its task terminated with CodeRunDamaged, and the index left as it is, so
// `polos status` and `polos verify` show what was lost. The entry may be
// newer than the history read before it; the history is read again once
// before deciding. It returns the history to run (reread or not). An index
// that cannot be read does not stop the run (the index is derived).
func (e *Executor) checkIndex(ctx context.Context, runID string, hist []events.Event) ([]events.Event, error) {
	idx, found, err := index.Get(ctx, e.store.Reader(), e.opts.Namespace, runID)
	if err != nil || !found {
		return hist, nil
	}
	why := events.IndexMismatch(idx, hist)
	if why == "" {
		return hist, nil
	}
	fresh, err := e.store.Load(ctx, runID, 0)
	if err != nil {
		return nil, err
	}
	if why = events.IndexMismatch(idx, fresh); why == "" {
		return fresh, nil
	}
	e.cache.drop(runID)
	err = perr.New(events.CodeRunDamaged,
		fmt.Sprintf("see `polos verify %s`; restore stream %s from a backup, or end the run with `polos cancel %s`", runID, protocol.RunsStreamOf(runID), runID),
		"run %s is parked: [%s] %s", runID, events.CodeHistoryBroken, why)
	if e.reported.first("lost:"+runID+"@"+strconv.FormatUint(idx.LastSeq, 10), time.Now()) {
		e.log.Error("run history lost messages the run index recorded: parked until an operator acts; its tasks are terminated",
			"run", runID, "index_status", idx.Status, "index_seq", idx.LastSeq, "history_seq", events.TipOf(fresh).Seq, "stream", protocol.RunsStreamOf(runID), "err", err)
	}
	return nil, err
}
