package executor

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// DefaultLeaseTTL is how long a lease record stays fresh without a renewal
// (its holder renews it every DefaultLeaseTTL/3). It hands nothing over by
// itself: a taker probes the holder whatever the record says (ADR 0010),
// so it can be long, which keeps lease traffic (and the reaper's watch) at
// one write per run every DefaultLeaseTTL/3.
const DefaultLeaseTTL = 30 * time.Second

// CodeRunBusy: another live executor is advancing the run right now.
const CodeRunBusy perr.Code = "RUN_BUSY"

// CodeOtherBuild: the run is pinned to another build, and a live executor
// of that build exists.
const CodeOtherBuild perr.Code = "OTHER_BUILD"

// The lease tells a live executor's in-flight step from a dead one's: only
// the lease holder appends, so a step_started without an end, seen by a new
// lease holder, really was left behind by an executor that stopped.
//
// Expiry alone hands nothing over (docs/adr/0010-liveness-not-expiry.md): a
// broker stall or a leader election stops every renewal at once while the
// owners are alive. A taker that finds an expired lease probes the owner
// (protocol.ProbeOwner) and takes the run only when the owner is gone or
// says it does not hold the run; a probe that proves nothing (timeout)
// leaves the run busy. Dead owners' runs are handed over faster than any
// expiry by the Reaper. Correctness never depends on the lease alone:
// appends are compare-and-swap, so a stalled ex-holder's late append is
// rejected and it abandons the run.
type lease struct {
	nc     *nats.Conn
	kv     jetstream.KeyValue
	key    string
	owner  string
	queue  string
	rev    uint64
	health *renewHealth
	stop   chan struct{}
	done   chan struct{}
}

func (e *Executor) acquireLease(ctx context.Context, runID, queue string) (*lease, error) {
	if err := e.answerProbes(); err != nil { // no lease without a way to prove we are alive
		return nil, err
	}
	kv, err := e.js.KeyValue(ctx, protocol.LeasesKV)
	if err != nil {
		return nil, protocol.Unavailable(err, events.CodeStoreIO, "lease bucket unavailable")
	}
	l := &lease{nc: e.nc, kv: kv, key: protocol.LeaseKey(e.opts.Namespace, runID), owner: e.opts.ID, queue: queue, health: &e.renewals}
	// A compare-and-swap conflict is not proof of a rival: our own previous
	// release (published without waiting) may land between the read and the
	// write. Re-read a few times; only a live record naming another owner
	// makes the run busy.
	for attempt := 0; ; attempt++ {
		err = l.tryAcquire(ctx, kv, e.opts.Namespace, runID)
		if err == nil {
			break
		}
		if !events.IsCASConflict(err) {
			return nil, err
		}
		if attempt+1 >= leaseAcquireAttempts {
			return nil, perr.New(CodeRunBusy, "none needed: the task is retried shortly", "run %s was just taken by another executor", runID)
		}
	}
	e.held.add(runID)
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.renew()
	return l, nil
}

// leaseRenewTimeout bounds one renewal: one that takes longer counts as
// failing (renewHealth).
const leaseRenewTimeout = 2 * time.Second

// leaseRenewRetry is the pause before a failed renewal is tried again.
const leaseRenewRetry = 500 * time.Millisecond

// leaseAcquireAttempts bounds the re-reads after a compare-and-swap conflict
// on the lease key.
const leaseAcquireAttempts = 4

func (l *lease) record() []byte {
	rec, _ := json.Marshal(protocol.LeaseRecord{Owner: l.owner, Expires: time.Now().Add(DefaultLeaseTTL), Queue: l.queue})
	return rec
}

// tryAcquire makes one read-then-write attempt. It returns a CodeRunBusy
// error when another live executor holds the lease, the raw conflict error
// when the key changed between the read and the write, and sets l.rev on
// success.
func (l *lease) tryAcquire(ctx context.Context, kv jetstream.KeyValue, ns, runID string) error {
	rec := l.record()
	// Most tasks find no lease (the last holder released it): try to
	// create it first, which saves a read round trip on that path.
	rev, err := kv.Create(ctx, l.key, rec)
	if err == nil {
		l.rev = rev
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) && !events.IsCASConflict(err) {
		return perr.Wrap(err, events.CodeStoreIO, "", "cannot take the lease of run %s", runID)
	}
	entry, err := kv.Get(ctx, l.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		l.rev, err = kv.Create(ctx, l.key, rec)
	case err != nil:
	default:
		var cur protocol.LeaseRecord
		_ = json.Unmarshal(entry.Value(), &cur)
		if cur.Owner != l.owner {
			// Neither a fresh nor an expired record proves anything (a
			// dead owner's record stays fresh for DefaultLeaseTTL; a
			// stalled broker lets live owners' records expire): ask the
			// owner.
			switch protocol.ProbeOwnerConfirmed(ctx, l.nc, ns, cur.Owner, runID) {
			case protocol.OwnerHolds:
				late := ""
				if time.Now().After(cur.Expires) {
					late = ", renewing late (store stalled?)"
				}
				return perr.New(CodeRunBusy, "none needed: the task is retried shortly",
					"run %s is being advanced by %s, which is alive%s", runID, cur.Owner, late)
			case protocol.OwnerUnknown:
				return perr.New(CodeRunBusy, "none needed: the task is retried shortly",
					"run %s is leased by %s, which did not answer a probe; it keeps the run until it is known to be gone", runID, cur.Owner)
			}
		}
		l.rev, err = kv.Update(ctx, l.key, rec, entry.Revision())
	}
	if err != nil && !events.IsCASConflict(err) {
		return perr.Wrap(err, events.CodeStoreIO, "", "cannot take the lease of run %s", runID)
	}
	return err
}

func (l *lease) renew() {
	defer close(l.done)
	t := time.NewTimer(DefaultLeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), leaseRenewTimeout)
			rev, err := l.kv.Update(ctx, l.key, l.record(), l.rev)
			cancel()
			if err == nil {
				l.rev = rev
			}
			l.health.report(err)
			next := DefaultLeaseTTL / 3
			if err != nil && !events.IsCASConflict(err) {
				next = leaseRenewRetry // the store is failing: know soon when it is back
			}
			t.Reset(next)
		}
	}
}

// release ends the lease so the next task for the run need not wait. The
// delete is published without waiting for the server's ack (one fsync less
// on every task): if it is lost, the lease expires after DefaultLeaseTTL and
// the next taker's probe finds this executor no longer holds the run.
func (l *lease) release(held *runSet, runID string) {
	close(l.stop)
	<-l.done
	held.remove(runID)
	m := nats.NewMsg(protocol.KVSubject(protocol.LeasesKV, l.key))
	m.Header.Set("KV-Operation", "DEL")
	m.Header.Set("Nats-Expected-Last-Subject-Sequence", strconv.FormatUint(l.rev, 10))
	_ = l.nc.PublishMsg(m)
}

// runSet is the set of runs this executor holds leases on: what it answers
// liveness probes with.
type runSet struct {
	mu   sync.Mutex
	runs map[string]int
}

func (s *runSet) add(runID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runs == nil {
		s.runs = map[string]int{}
	}
	s.runs[runID]++
}

func (s *runSet) remove(runID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runs[runID]--; s.runs[runID] <= 0 {
		delete(s.runs, runID)
	}
}

func (s *runSet) has(runID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[runID] > 0
}

// renewHealth tracks whether lease renewals succeed. An executor whose
// renewals fail (the store is stalled, electing, or full) stops starting
// new work: it keeps the runs it has, which nobody takes while it answers
// probes, and hands new tasks back until a renewal succeeds again.
type renewHealth struct {
	mu       sync.Mutex
	failing  bool
	since    time.Time
	lastErr  error
	reported bool
}

func (h *renewHealth) report(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil || events.IsCASConflict(err) {
		// A conflict means another executor took the run: this one's
		// next append is rejected and it lets go; the store is healthy.
		h.failing, h.reported = false, false
		return
	}
	if !h.failing {
		h.failing, h.since = true, time.Now()
	}
	h.lastErr = err
}

// failingFor reports whether renewals have been failing, and for how long.
func (h *renewHealth) failingFor() (bool, time.Duration, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.failing {
		return false, 0, nil
	}
	return true, time.Since(h.since), h.lastErr
}
