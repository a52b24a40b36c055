package executor

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/perr"
	"github.com/polos-run/polos/protocol"
)

// DefaultLeaseTTL is how long a run stays owned by an executor that stopped
// renewing (it renews every DefaultLeaseTTL/3 while it works on the run).
// It equals the task ack wait, so a run whose executor was killed is taken
// over by another within about that long.
const DefaultLeaseTTL = protocol.DefaultTaskAckWait

// CodeRunBusy: another live executor is advancing the run right now.
const CodeRunBusy perr.Code = "RUN_BUSY"

// The lease tells a live executor's in-flight step from a dead one's: only
// the lease holder appends, so a step_started without an end, seen by a new
// lease holder, really was left behind by an executor that stopped. Expiry
// compares wall clocks of different machines: keep them NTP-synchronised
// (skew eats into DefaultLeaseTTL). Correctness never depends on the lease
// alone: appends are compare-and-swap, so a stalled ex-holder's late
// append is rejected and it abandons the run.
type lease struct {
	nc    *nats.Conn
	kv    jetstream.KeyValue
	key   string
	owner string
	rev   uint64
	stop  chan struct{}
	done  chan struct{}
}

type leaseRecord struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
}

func (e *Executor) acquireLease(ctx context.Context, runID string) (*lease, error) {
	kv, err := e.js.KeyValue(ctx, protocol.LeasesKV)
	if err != nil {
		return nil, perr.Wrap(err, events.CodeStoreIO, "start polosd once to provision the server", "lease bucket unavailable")
	}
	l := &lease{nc: e.nc, kv: kv, key: protocol.LeaseKey(e.opts.Namespace, runID), owner: e.opts.ID}
	// A compare-and-swap conflict is not proof of a rival: our own previous
	// release (published without waiting) may land between the read and the
	// write. Re-read a few times; only a live record naming another owner
	// makes the run busy.
	for attempt := 0; ; attempt++ {
		err = l.tryAcquire(ctx, kv, runID)
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
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.renew()
	return l, nil
}

// leaseAcquireAttempts bounds the re-reads after a compare-and-swap conflict
// on the lease key.
const leaseAcquireAttempts = 4

// tryAcquire makes one read-then-write attempt. It returns a CodeRunBusy
// error when another live executor holds the lease, the raw conflict error
// when the key changed between the read and the write, and sets l.rev on
// success.
func (l *lease) tryAcquire(ctx context.Context, kv jetstream.KeyValue, runID string) error {
	rec, _ := json.Marshal(leaseRecord{Owner: l.owner, Expires: time.Now().Add(DefaultLeaseTTL)})
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
		var cur leaseRecord
		_ = json.Unmarshal(entry.Value(), &cur)
		if cur.Owner != l.owner && time.Now().Before(cur.Expires) {
			return perr.New(CodeRunBusy, "none needed: the task is retried shortly",
				"run %s is being advanced by %s until %s", runID, cur.Owner, cur.Expires.Format(time.RFC3339Nano))
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
	t := time.NewTicker(DefaultLeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			rec, _ := json.Marshal(leaseRecord{Owner: l.owner, Expires: time.Now().Add(DefaultLeaseTTL)})
			ctx, cancel := context.WithTimeout(context.Background(), DefaultLeaseTTL/3)
			rev, err := l.kv.Update(ctx, l.key, rec, l.rev)
			cancel()
			if err == nil {
				l.rev = rev
			}
		}
	}
}

// release ends the lease so the next task for the run need not wait. The
// delete is published without waiting for the server's ack (one fsync less
// on every task): if it is lost, the lease simply expires after
// DefaultLeaseTTL, and a task arriving before that is retried (RUN_BUSY).
func (l *lease) release() {
	close(l.stop)
	<-l.done
	m := nats.NewMsg(protocol.KVSubject(protocol.LeasesKV, l.key))
	m.Header.Set("KV-Operation", "DEL")
	m.Header.Set("Nats-Expected-Last-Subject-Sequence", strconv.FormatUint(l.rev, 10))
	_ = l.nc.PublishMsg(m)
}
