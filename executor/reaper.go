package executor

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Reaper defaults.
const (
	// DefaultReapInterval is how often the reaper probes the owners of
	// leases.
	DefaultReapInterval = 100 * time.Millisecond
	// DefaultReapProbes is how many probes in a row, spanning at least
	// protocol.DefaultOwnerGoneFor, must find an owner gone before its runs
	// are handed over: a missed probe may be a client reconnecting.
	DefaultReapProbes = 2
	// reapRewatchDelay is the pause before a lost lease watch is opened again.
	reapRewatchDelay = time.Second
)

// Reaper hands the runs of dead executors to live ones as soon as they are
// known to be dead, instead of when their tasks' ack wait and their leases
// expire. It watches the namespace's leases, probes each distinct owner
// every DefaultReapInterval (protocol.ProbeOwner), and when an owner is
// gone DefaultReapProbes times in a row over protocol.DefaultOwnerGoneFor
// (its NATS connection is closed: the server answers "no responders"),
// deletes each of its leases
// (compare-and-swap on the revision it saw, so a lease renewed or taken
// meanwhile is left alone) and queues the run again.
//
// After the reaper's own connection reconnects, nobody is found gone for
// protocol.DefaultReconnectGrace: after a broker restart every executor
// reconnects at its own pace, and one that has not yet is not dead.
//
// Under failure: a probe that times out proves nothing and reaps nothing
// (a stalled broker or owner keeps its runs). A reaper that dies between a
// lease's delete and the run's task leaves the run to its original task,
// redelivered after the ack wait. Several reapers (one per polosd server)
// are safe: the delete is compare-and-swap and the task is de-duplicated by
// lease revision.
type Reaper struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	ns       string
	log      *slog.Logger
	interval time.Duration
	// OnReap, when set, is called for each run handed over (tests, metrics).
	OnReap func(runID, owner string)
	reaped atomic.Int64
}

// NewReaper returns a reaper for namespace ns; call Run.
func NewReaper(nc *nats.Conn, js jetstream.JetStream, ns string, log *slog.Logger) *Reaper {
	if ns == "" {
		ns = events.DefaultNamespace
	}
	if log == nil {
		log = slog.Default()
	}
	return &Reaper{nc: nc, js: js, ns: ns, log: log, interval: DefaultReapInterval}
}

// Reaped is how many runs the reaper handed over.
func (r *Reaper) Reaped() int64 { return r.reaped.Load() }

type heldLease struct {
	rev uint64
	rec protocol.LeaseRecord
}

// Run watches and reaps until ctx ends. It returns an error only when the
// lease bucket cannot be opened at all.
func (r *Reaper) Run(ctx context.Context) error {
	kv, err := r.js.KeyValue(ctx, protocol.LeasesKV)
	if err != nil {
		return protocol.Unavailable(err, events.CodeStoreIO, "lease bucket unavailable")
	}
	for ctx.Err() == nil {
		if err := r.watch(ctx, kv); err != nil && ctx.Err() == nil {
			r.log.Warn("lease watch lost; reopening it", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(reapRewatchDelay):
		}
	}
	return nil
}

// watch follows the leases of the namespace and probes on every tick,
// until the watch ends.
func (r *Reaper) watch(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.Watch(ctx, r.ns+".>")
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	leases := map[string]heldLease{}
	gone := map[string]*goneSince{}
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return perr.New(events.CodeStoreIO, "", "lease watch closed")
			}
			if e == nil { // initial values done
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				delete(leases, e.Key())
				continue
			}
			var rec protocol.LeaseRecord
			if json.Unmarshal(e.Value(), &rec) != nil || rec.Owner == "" {
				continue
			}
			leases[e.Key()] = heldLease{rev: e.Revision(), rec: rec}
		case <-tick.C:
			r.probe(ctx, kv, leases, gone)
		}
	}
}

// probe asks every owner once, concurrently, and reaps the runs of owners
// gone DefaultReapProbes times in a row over protocol.DefaultOwnerGoneFor.
// goneSince counts the probes in a row that found an owner gone, since when.
type goneSince struct {
	n     int
	since time.Time
}

func (g *goneSince) proven() bool {
	return g != nil && g.n >= DefaultReapProbes && time.Since(g.since) >= protocol.DefaultOwnerGoneFor
}

func (r *Reaper) probe(ctx context.Context, kv jetstream.KeyValue, leases map[string]heldLease, gone map[string]*goneSince) {
	owners := map[string]bool{}
	for _, l := range leases {
		owners[l.rec.Owner] = true
	}
	for o := range gone {
		if !owners[o] {
			delete(gone, o)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for o := range owners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			live := protocol.ProbeOwner(ctx, r.nc, r.ns, o, "")
			mu.Lock()
			defer mu.Unlock()
			switch live {
			case protocol.OwnerGone:
				if gone[o] == nil {
					gone[o] = &goneSince{since: time.Now()}
				}
				gone[o].n++
			case protocol.OwnerHolds, protocol.OwnerIdle:
				delete(gone, o)
			}
		}()
	}
	wg.Wait()
	for key, l := range leases {
		if !gone[l.rec.Owner].proven() {
			continue
		}
		delete(leases, key)
		r.reap(ctx, kv, key, l)
	}
}

func (r *Reaper) reap(ctx context.Context, kv jetstream.KeyValue, key string, l heldLease) {
	_, runID, ok := protocol.ParseLeaseKey(key)
	if !ok {
		return
	}
	if err := kv.Delete(ctx, key, jetstream.LastRevision(l.rev)); err != nil {
		if !events.IsCASConflict(err) {
			r.log.Warn("cannot hand over a dead executor's run; its task is redelivered after the ack wait", "run", runID, "owner", l.rec.Owner, "err", err)
		}
		return // renewed or taken meanwhile: not ours to hand over
	}
	rev := strconv.FormatUint(l.rev, 10)
	if err := protocol.Enqueue(ctx, r.js, r.ns, l.rec.Queue, runID, "reap:"+l.rec.Owner, "reap:"+runID+":"+rev); err != nil {
		r.log.Warn("cannot queue a dead executor's run; its task is redelivered after the ack wait", "run", runID, "owner", l.rec.Owner, "err", err)
		return
	}
	r.reaped.Add(1)
	r.log.Info("handed a dead executor's run to the others", "run", runID, "owner", l.rec.Owner)
	if r.OnReap != nil {
		r.OnReap(runID, l.rec.Owner)
	}
}
