// Package ratelimit keeps the limits that must hold across every executor
// on every machine: queue concurrency slots (Slots), provider rate limits
// as token buckets (Bucket) and token/cost budgets (Budget). All state lives
// in JetStream KV buckets and every change is a compare-and-swap, so racing
// executors in different processes never both win the same unit.
package ratelimit

import (
	"sync"

	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Error codes.
const (
	CodeBudgetExceeded perr.Code = "BUDGET_EXCEEDED" // a call would cross a token or cost budget
	CodeBadLimit       perr.Code = "BAD_LIMIT"       // a limit or scope that cannot be used
	CodeContention     perr.Code = "LIMIT_CONTENTION"
)

// DefaultMaxCASAttempts bounds the compare-and-swap loop of one change. Each
// lost attempt means another writer's change landed, so the loop only runs
// long under extreme contention on one key.
const DefaultMaxCASAttempts = 200

// errNoChange, returned by a mutate function, skips the write.
var errNoChange = errors.New("no change")

// update reads key, lets mutate compute the new value from the current one
// (nil when the key does not exist) and writes it with compare-and-swap,
// repeating from the read when another writer got in first. mutate may run
// several times and must not have side effects. It returns the value
// written (or the current one when mutate returned errNoChange).
func update(ctx context.Context, kv jetstream.KeyValue, key string, mutate func(cur []byte) ([]byte, error)) ([]byte, error) {
	for attempt := 0; attempt < DefaultMaxCASAttempts; attempt++ {
		var cur []byte
		var rev uint64
		entry, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return nil, perr.Wrap(err, events.CodeStoreIO, "check that the NATS server is up (polosd running?)", "cannot read limit state %s", key)
		default:
			cur, rev = entry.Value(), entry.Revision()
		}
		next, err := mutate(cur)
		if errors.Is(err, errNoChange) {
			return cur, nil
		}
		if err != nil {
			return nil, err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, key, next)
		} else {
			_, err = kv.Update(ctx, key, next, rev)
		}
		if err == nil {
			return next, nil
		}
		if !events.IsCASConflict(err) {
			return nil, perr.Wrap(err, events.CodeStoreIO, "check that the NATS server is up (polosd running?)", "cannot write limit state %s", key)
		}
		if ctx.Err() != nil {
			return nil, perr.Wrap(ctx.Err(), events.CodeStoreIO, "", "update of limit state %s cancelled", key)
		}
	}
	return nil, perr.New(CodeContention, "spread the load over more queues or keys", "limit state %s changed under %d consecutive attempts", key, DefaultMaxCASAttempts)
}

// lazyKV opens a KV bucket on first use and keeps the handle, so a
// component that is never used (a queue without limit) never touches it.
// A failed open is retried on the next call.
type lazyKV struct {
	js   jetstream.JetStream
	name string
	mu   sync.Mutex
	kv   jetstream.KeyValue
}

func (l *lazyKV) get(ctx context.Context) (jetstream.KeyValue, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kv != nil {
		return l.kv, nil
	}
	kv, err := l.js.KeyValue(ctx, l.name)
	if err != nil {
		return nil, protocol.Unavailable(err, events.CodeStoreIO, "KV bucket %s unavailable", l.name)
	}
	l.kv = kv
	return kv, nil
}
