package index

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Report says what Rebuild found and did.
type Report struct {
	Namespace   string        `json:"namespace"`
	Runs        int           `json:"runs"`         // histories read
	Messages    int           `json:"messages"`     // stored messages read
	Written     int           `json:"written"`      // entries created or rewritten
	Unchanged   int           `json:"unchanged"`    // entries that were right
	Deleted     int           `json:"deleted"`      // entries of runs without a history
	Raced       int           `json:"raced"`        // entries an executor rewrote meanwhile (theirs is newer and kept)
	BadEntries  int           `json:"bad_entries"`  // unreadable entries found (each rewritten or deleted)
	DamagedRuns int           `json:"damaged_runs"` // runs whose history holds unreadable messages
	Strays      int           `json:"strays"`       // messages on run subjects of no run of their partition
	Took        time.Duration `json:"took_ns"`
}

// String is a one-line account of the rebuild.
func (r Report) String() string {
	return fmt.Sprintf("run index of namespace %s rebuilt from %d histories (%d messages) in %s: %d entries written, %d unchanged, %d deleted (no history), %d left to newer writes; %d unreadable entries found, %d damaged runs, %d stray messages",
		r.Namespace, r.Runs, r.Messages, r.Took.Round(time.Millisecond), r.Written, r.Unchanged, r.Deleted, r.Raced, r.BadEntries, r.DamagedRuns, r.Strays)
}

// Rebuild recomputes the index entry of every run of namespace ns from its
// history and deletes entries of runs that have none.
//
// It reads the index first, then every history (one ordered consumer per
// partition, not one read per run), and writes only entries that differ,
// each with compare-and-swap on the revision it read: an entry an executor
// rewrote meanwhile describes a newer state and is kept (Raced). An entry
// is deleted only if the index read saw it before the history read found
// no run for it (runs are created before their entry, so a run that exists
// is always found). Safe to run while executors work, and again.
func Rebuild(ctx context.Context, js jetstream.JetStream, ns string) (Report, error) {
	began := time.Now()
	r := Report{Namespace: ns}
	entries, err := scan(ctx, js, ns)
	if err != nil {
		return r, err
	}
	hists, err := readHistories(ctx, js, ns, &r)
	if err != nil {
		return r, err
	}
	r.Runs = len(hists)
	sums := make(map[string]events.Summary, len(hists))
	for id, hist := range hists {
		sum := events.Summarize(hist)
		sum.Namespace = ns
		if sum.DamagedMessages > 0 {
			r.DamagedRuns++
		}
		sums[id] = sum
	}
	hists = nil
	w := &writer{js: js, r: &r}
	seen := map[string]bool{}
	for _, e := range entries {
		id := RunIDOfKey(ns, e.key)
		seen[id] = true
		if e.err != nil {
			r.BadEntries++
		}
		sum, ok := sums[id]
		switch {
		case !ok:
			r.Deleted++
			err = w.write(ctx, casMsg(e.key, e.rev, nil))
		case e.err == nil && same(e.sum, sum):
			r.Unchanged++
		default:
			r.Written++
			err = w.write(ctx, casMsg(e.key, e.rev, encode(sum)))
		}
		if err != nil {
			return r, err
		}
	}
	for id, sum := range sums {
		if seen[id] {
			continue
		}
		r.Written++
		if err := w.write(ctx, casMsg(protocol.IndexKey(ns, id), 0, encode(sum))); err != nil {
			return r, err
		}
	}
	if err := w.flush(ctx); err != nil {
		return r, err
	}
	r.Took = time.Since(began)
	return r, nil
}

// KV headers for writing entries with compare-and-swap (what kv.Update and
// kv.Delete with LastRevision send).
const (
	kvOperation = "KV-Operation"
	kvDelete    = "DEL"
)

// casMsg writes value under key if the key's last revision is still rev
// (0: the key has no entry); nil value deletes the entry.
func casMsg(key string, rev uint64, value []byte) *nats.Msg {
	m := nats.NewMsg(protocol.KVSubject(protocol.RunsKV, key))
	m.Data = value
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	if value == nil {
		m.Header.Set(kvOperation, kvDelete)
	}
	return m
}

// writeWindow bounds the index writes in flight (the client's async
// publish limit is larger, but stalls rather than waits).
const writeWindow = 512

// writer publishes compare-and-swap writes with a bounded window and
// counts the ones that lost their race.
type writer struct {
	js       jetstream.JetStream
	r        *Report
	inflight []jetstream.PubAckFuture
}

func (w *writer) write(ctx context.Context, m *nats.Msg) error {
	if len(w.inflight) >= writeWindow {
		if err := w.settle(ctx, w.inflight[0]); err != nil {
			return err
		}
		w.inflight = w.inflight[1:]
	}
	f, err := w.js.PublishMsgAsync(m)
	if err != nil {
		return perr.Wrap(err, events.CodeStoreIO, "check the NATS connection", "cannot write the run index")
	}
	w.inflight = append(w.inflight, f)
	return nil
}

func (w *writer) flush(ctx context.Context) error {
	for _, f := range w.inflight {
		if err := w.settle(ctx, f); err != nil {
			return err
		}
	}
	w.inflight = nil
	return nil
}

func (w *writer) settle(ctx context.Context, f jetstream.PubAckFuture) error {
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		if !events.IsCASConflict(err) {
			return perr.Wrap(err, events.CodeStoreIO, "check the NATS server and run the rebuild again", "cannot write the run index")
		}
		w.r.Raced++ // a newer write won: keep it
		if f.Msg().Header.Get(kvOperation) == kvDelete {
			w.r.Deleted--
		} else {
			w.r.Written--
		}
		return nil
	case <-ctx.Done():
		return perr.Wrap(ctx.Err(), events.CodeStoreIO, "", "rebuilding the run index cancelled")
	}
}

// same reports whether a stored entry already says what the history says.
// Fields derived from payloads Rebuild does not load (forms in the object
// store) are not compared.
func same(stored, fresh events.Summary) bool {
	return stored.LastSeq == fresh.LastSeq && stored.Status == fresh.Status && stored.Events == fresh.Events &&
		stored.DamagedMessages == fresh.DamagedMessages && stored.Agent == fresh.Agent && stored.Namespace == fresh.Namespace
}

// readHistories reads every stored message of namespace ns, partition by
// partition, into per-run histories. Payloads Summarize does not need are
// dropped as they are read, so memory grows with the number of events, not
// their size.
func readHistories(ctx context.Context, js jetstream.JetStream, ns string, r *Report) (map[string][]events.Event, error) {
	hists := map[string][]events.Event{}
	for p := 0; p < protocol.RunPartitions; p++ {
		stream := protocol.RunsStreamName(p)
		cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{protocol.PartitionFilter(ns, p)}, InactiveThreshold: protocol.DefaultReaderInactive})
		if err != nil {
			return nil, protocol.Unavailable(err, events.CodeStoreIO, "cannot read stream %s", stream)
		}
		defer protocol.DropConsumer(js, stream, cons)
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, perr.Wrap(err, events.CodeStoreIO, "", "cannot read stream %s", stream)
		}
		for left := int(info.NumPending); left > 0; {
			batch, err := cons.Fetch(min(left, fetchBatch), jetstream.FetchMaxWait(fetchWait))
			if err != nil {
				return nil, perr.Wrap(err, events.CodeStoreIO, "", "cannot read stream %s", stream)
			}
			got := 0
			for m := range batch.Messages() {
				got++
				r.Messages++
				md, err := m.Metadata()
				if err != nil {
					continue
				}
				id := events.RunIDOfSubject(ns, m.Subject())
				if events.ValidateID("run ID", id) != nil || protocol.RunPartition(id) != p {
					r.Strays++ // no reader of any run sees it
					continue
				}
				for _, ev := range events.ReadMessage(ns, id, events.StoredMsg{Stream: stream, Subject: m.Subject(), Seq: md.Sequence.Stream, Time: md.Timestamp, Data: m.Data()}) {
					if ev.Type != events.Suspended && ev.Type != events.RunParked {
						ev.Data = nil // not part of a summary
					}
					hists[id] = append(hists[id], ev)
				}
			}
			if err := batch.Error(); err != nil && got == 0 {
				return nil, perr.Wrap(err, events.CodeStoreIO, "", "cannot read stream %s", stream)
			}
			if got == 0 && ctx.Err() != nil {
				return nil, perr.Wrap(ctx.Err(), events.CodeStoreIO, "", "reading stream %s cancelled", stream)
			}
			left -= got
		}
	}
	return hists, nil
}

// Reading defaults.
const (
	fetchBatch = 1000
	fetchWait  = 5 * time.Second
)

// Health is what a look at the index found.
type Health struct {
	Entries    int  `json:"entries"`
	Unreadable int  `json:"unreadable"`
	Histories  bool `json:"histories"` // some partition holds events of the namespace
}

// NeedsRebuild reports whether the index looks damaged (an unreadable
// entry) or lost (no entry while histories exist).
func (h Health) NeedsRebuild() bool {
	return h.Unreadable > 0 || (h.Entries == 0 && h.Histories)
}

// Check looks at the index of namespace ns: one pass over its entries and
// one read per partition.
func Check(ctx context.Context, js jetstream.JetStream, ns string) (Health, error) {
	entries, err := scan(ctx, js, ns)
	if err != nil {
		return Health{}, err
	}
	h := Health{Entries: len(entries)}
	for _, e := range entries {
		if e.err != nil {
			h.Unreadable++
		}
	}
	for p := 0; p < protocol.RunPartitions && !h.Histories; p++ {
		st, err := js.Stream(ctx, protocol.RunsStreamName(p))
		if err != nil {
			return h, protocol.Unavailable(err, events.CodeStoreIO, "cannot read stream %s", protocol.RunsStreamName(p))
		}
		_, err = st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(protocol.PartitionFilter(ns, p)))
		switch {
		case err == nil:
			h.Histories = true
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return h, perr.Wrap(err, events.CodeStoreIO, "", "cannot read stream %s", protocol.RunsStreamName(p))
		}
	}
	return h, nil
}

// RepairAtStart checks the index of namespace ns and rebuilds it when it
// looks damaged or lost (polosd calls it at start). It logs what it did;
// the report is nil when nothing was needed.
func RepairAtStart(ctx context.Context, js jetstream.JetStream, ns string, log *slog.Logger) (*Report, error) {
	h, err := Check(ctx, js, ns)
	if err != nil {
		return nil, err
	}
	if !h.NeedsRebuild() {
		return nil, nil
	}
	log.Warn("run index looks damaged or lost; rebuilding it from the run histories", "namespace", ns, "entries", h.Entries, "unreadable", h.Unreadable)
	r, err := Rebuild(ctx, js, ns)
	if err != nil {
		return nil, err
	}
	log.Info(r.String())
	return &r, nil
}
