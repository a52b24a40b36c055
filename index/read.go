package index

import (
	"context"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/protocol"
)

// kvPurge is the KV-Operation header value of a purge marker (nats.go kv.go).
const kvPurge = "PURGE"

// Get reads run runID's entry with one direct get: what readers may do
// (operators and observers read KV_polos_runs without a consumer). found is
// false when the run has no entry (never indexed, or deleted). An entry
// that does not decode is a CodeBadEntry error.
func Get(ctx context.Context, r *protocol.DirectReader, ns, runID string) (sum events.Summary, found bool, err error) {
	key := protocol.IndexKey(ns, runID)
	m, ok, err := r.Last(ctx, protocol.KVStream(protocol.RunsKV), protocol.KVSubject(protocol.RunsKV, key))
	if err != nil || !ok || isDeleted(m) {
		return events.Summary{}, false, err
	}
	sum, err = Decode(ns, key, m.Data)
	return sum, err == nil, err
}

func isDeleted(m protocol.Stored) bool {
	op := m.Header.Get(kvOperation)
	return op == kvDelete || op == kvPurge
}

// Entry is one index entry as ReadAll found it: the summary, or why it
// could not be read.
type Entry struct {
	RunID string
	Sum   events.Summary
	Err   error // CodeBadEntry
}

// ReadAll reads every entry of namespace ns with batched direct gets over
// the bucket's stream (no consumer, so readers may do it): the last value
// of each key, deleted keys left out. Each entry's run ID comes from its key.
func ReadAll(ctx context.Context, r *protocol.DirectReader, ns string) ([]Entry, error) {
	stream := protocol.KVStream(protocol.RunsKV)
	last := map[string]protocol.Stored{}
	var order []string
	for from := uint64(1); ; {
		msgs, pending, err := r.Batch(ctx, stream, protocol.KVSubject(protocol.RunsKV, protocol.IndexFilter(ns)), from, protocol.FollowBatch)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if _, seen := last[m.Subject]; !seen {
				order = append(order, m.Subject)
			}
			last[m.Subject] = m
			from = m.Seq + 1
		}
		if pending == 0 || len(msgs) == 0 {
			break
		}
	}
	prefix := len(protocol.KVSubject(protocol.RunsKV, ""))
	var out []Entry
	for _, subj := range order {
		m := last[subj]
		if isDeleted(m) {
			continue
		}
		key := subj[prefix:]
		sum, err := Decode(ns, key, m.Data)
		out = append(out, Entry{RunID: RunIDOfKey(ns, key), Sum: sum, Err: err})
	}
	return out, nil
}
