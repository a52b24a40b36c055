// Package index is the run index: each run's summary (events.Summary) in KV
// bucket polos_runs under <ns>.<runID>. It is derived: the histories in the
// POLOS_RUNS_<p> streams are the truth, executors rewrite a run's entry
// after every change (Put), and Rebuild recomputes every entry from the
// histories. So a damaged entry never hides a run: List reads an entry it
// cannot decode from the run's history instead and reports it, and
// Rebuild (`polos index rebuild`, and polosd at start when the index looks
// damaged or lost) rewrites it.
package index

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Error codes.
const (
	// CodeBadEntry: an index entry that does not decode to the summary of
	// the run its key names.
	CodeBadEntry perr.Code = "INDEX_ENTRY_UNREADABLE"
)

// DefaultMaxRecover bounds how many unreadable entries one List reads from
// their run's history (one read each); the rest are skipped and counted.
const DefaultMaxRecover = 100

// FixHint is what to do about unreadable entries.
const FixHint = "rebuild the index from the run histories with `polos index rebuild`"

// Put writes a run's summary to the index. It does not wait for the
// server's acknowledgement: the entry is rewritten on the run's next change
// and by Rebuild, so a lost update costs a stale `polos list` line, never
// correctness, and saves an fsync wait.
func Put(ctx context.Context, js jetstream.JetStream, sum events.Summary) error {
	return js.Conn().Publish(protocol.KVSubject(protocol.RunsKV, protocol.IndexKey(sum.Namespace, sum.ID)), encode(sum))
}

// encode is the stored form of a summary: no result (`polos result` reads
// the history), so entries stay small.
func encode(sum events.Summary) []byte {
	sum.Result = nil
	b, _ := json.Marshal(sum)
	return b
}

// knownStatus lists the statuses an entry may have.
var knownStatus = map[string]bool{
	events.StatusRunning: true, events.StatusWaiting: true, events.StatusCompleted: true,
	events.StatusFailed: true, events.StatusCancelled: true, events.StatusDamaged: true,
}

// Decode reads the entry stored under key in namespace ns. It fails with
// CodeBadEntry when the value is not JSON, or not the summary of the run
// the key names.
func Decode(ns, key string, value []byte) (events.Summary, error) {
	var s events.Summary
	runID := RunIDOfKey(ns, key)
	bad := func(format string, args ...any) error {
		return perr.New(CodeBadEntry, FixHint, "index entry %s: %s", key, fmt.Sprintf(format, args...))
	}
	if events.ValidateID("run ID", runID) != nil {
		return s, bad("the key does not name a run of namespace %s", ns)
	}
	if err := json.Unmarshal(value, &s); err != nil {
		return events.Summary{}, bad("%d bytes that are not a run summary (%v)", len(value), err)
	}
	if s.ID != runID {
		return events.Summary{}, bad("the summary is of run %q", s.ID)
	}
	if !knownStatus[s.Status] {
		return events.Summary{}, bad("unknown status %q", s.Status)
	}
	return s, nil
}

// RunIDOfKey is the run ID in index key <ns>.<runID> ("" if it is not one).
func RunIDOfKey(ns, key string) string {
	id, ok := strings.CutPrefix(key, ns+".")
	if !ok || strings.Contains(id, ".") {
		return ""
	}
	return id
}

// entry is one index entry as scanned.
type entry struct {
	key string
	rev uint64
	sum events.Summary
	err error // CodeBadEntry
}

// scan reads every index entry of ns with one watch of the bucket (one
// pass over its stream, not one request per key).
func scan(ctx context.Context, js jetstream.JetStream, ns string) ([]entry, error) {
	kv, err := js.KeyValue(ctx, protocol.RunsKV)
	if err != nil {
		return nil, protocol.Unavailable(err, events.CodeStoreIO, "run index %s unavailable", protocol.RunsKV)
	}
	w, err := kv.Watch(ctx, protocol.IndexFilter(ns), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, perr.Wrap(err, events.CodeStoreIO, "", "cannot read the run index")
	}
	defer w.Stop()
	var out []entry
	for {
		select {
		case <-ctx.Done():
			return nil, perr.Wrap(ctx.Err(), events.CodeStoreIO, "", "reading the run index cancelled")
		case e, ok := <-w.Updates():
			if !ok {
				return nil, perr.New(events.CodeStoreIO, "check the NATS connection", "the run index watch closed early")
			}
			if e == nil { // every entry delivered
				return out, nil
			}
			s, err := Decode(ns, e.Key(), e.Value())
			out = append(out, entry{key: e.Key(), rev: e.Revision(), sum: s, err: err})
		}
	}
}

// Filter selects runs.
type Filter struct {
	Status string
	Agent  string
	Limit  int // 0: all
}

func (f Filter) match(s events.Summary) bool {
	return (f.Status == "" || s.Status == f.Status) && (f.Agent == "" || s.Agent == f.Agent)
}

// BadEntry is an index entry List could not read.
type BadEntry struct {
	Key       string `json:"key"`
	Reason    string `json:"reason"`
	Recovered bool   `json:"recovered"` // the run was read from its history instead
}

// Listing is what List found.
type Listing struct {
	Runs       []events.Summary
	Unreadable []BadEntry // entries that could not be read
}

// Recovered counts the unreadable entries whose run was listed anyway.
func (l Listing) Recovered() int {
	n := 0
	for _, b := range l.Unreadable {
		if b.Recovered {
			n++
		}
	}
	return n
}

// Problem describes the unreadable entries and what to do, or "" when
// there were none.
func (l Listing) Problem() string {
	if len(l.Unreadable) == 0 {
		return ""
	}
	rec := l.Recovered()
	s := fmt.Sprintf("%d run index entr%s could not be read (%s first)", len(l.Unreadable), plural(len(l.Unreadable), "y", "ies"), l.Unreadable[0].Key)
	switch {
	case rec == len(l.Unreadable):
		s += "; the runs were read from their histories instead"
	case rec > 0:
		s += fmt.Sprintf("; %d run%s read from their histories instead, %d skipped", rec, plural(rec, " was", "s were"), len(l.Unreadable)-rec)
	default:
		s += "; they were skipped"
	}
	return s + "; " + FixHint
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// List returns the runs of namespace ns that match f, newest first.
// An entry it cannot read is listed from the run's history when its key
// names a run (history, at most DefaultMaxRecover per call; nil: never) and
// reported in Unreadable either way.
func List(ctx context.Context, js jetstream.JetStream, ns string, f Filter, history func(ctx context.Context, runID string) (events.Summary, error)) (Listing, error) {
	entries, err := scan(ctx, js, ns)
	if err != nil {
		return Listing{}, err
	}
	var l Listing
	for _, e := range entries {
		s := e.sum
		if e.err != nil {
			bad := BadEntry{Key: e.key, Reason: e.err.Error()}
			if id := RunIDOfKey(ns, e.key); history != nil && events.ValidateID("run ID", id) == nil && len(l.Unreadable) < DefaultMaxRecover {
				var herr error
				if s, herr = history(ctx, id); herr == nil {
					bad.Recovered = true
				} else if !errors.Is(herr, context.Canceled) {
					bad.Reason += "; its history: " + herr.Error()
				}
			}
			l.Unreadable = append(l.Unreadable, bad)
			if !bad.Recovered {
				continue
			}
		}
		if f.match(s) {
			l.Runs = append(l.Runs, s)
		}
	}
	sort.SliceStable(l.Runs, func(i, j int) bool { return l.Runs[i].CreatedAt.After(l.Runs[j].CreatedAt) })
	if f.Limit > 0 && len(l.Runs) > f.Limit {
		l.Runs = l.Runs[:f.Limit]
	}
	return l, nil
}
