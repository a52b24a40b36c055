package client

import (
	"context"
	"fmt"
	"sort"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Problem is one thing wrong with a run's history: where (run, stream,
// sequence) and what (a coded reason; for a broken link of the chain, the
// predecessor the message names and the one the history has).
type Problem struct {
	Run string `json:"run"`
	events.Damage
}

// String renders p for a report line.
func (p Problem) String() string { return fmt.Sprintf("run %s: [%s] %s", p.Run, p.Code, p.Damage) }

// VerifyReport is what Verify and VerifyAll found.
type VerifyReport struct {
	Runs     int `json:"runs"`     // runs checked
	Messages int `json:"messages"` // stored messages read
	// Unchained counts messages written before the chain existed: they
	// carry no link, so nothing but their order vouches for them.
	Unchained int       `json:"unchained"`
	Problems  []Problem `json:"problems"`
	// Lost lists what the run streams' states say was lost (VerifyAll; for
	// Verify, the run's own stream).
	Lost []protocol.StreamLoss `json:"lost,omitempty"`
	// Unreadable counts stored messages of the streams that could not be
	// read although the stream counts them (VerifyAll: a damaged block
	// whose checksum fails), by stream; each is also a Problem.
	Unreadable map[string]int `json:"unreadable,omitempty"`
}

// OK reports whether nothing is wrong.
func (r VerifyReport) OK() bool { return len(r.Problems) == 0 && len(r.Lost) == 0 }

// runCheck is the state of one run's check while its messages are read in
// order: the vetter (chain and placement), what the index comparison needs.
type runCheck struct {
	vet       events.Vetter
	idx       *index.Entry
	tip       events.Tip
	final     bool
	atDigest  string
	atFound   bool
	msgs      int
	unchained int
	problems  []Problem
}

func (rc *runCheck) message(runID string, evs []events.Event) {
	rc.msgs++
	own := evs[len(evs)-1]
	if rc.msgs > 1 && own.Type != events.Unreadable && !own.Chained() {
		rc.unchained++
	}
	for _, e := range rc.vet.Check(evs) {
		if d, ok := events.DamageOf(e); ok {
			rc.problems = append(rc.problems, Problem{Run: runID, Damage: d})
		}
		if e.Type.IsTerminal() {
			rc.final = true
		}
	}
	rc.tip = events.TipOfEvent(&own)
	if rc.idx != nil && own.Seq == rc.idx.Sum.LastSeq {
		rc.atDigest, rc.atFound = own.Digest, true
	}
}

// finish compares the history read with the run's index entry.
func (rc *runCheck) finish(runID string) {
	if rc.idx == nil {
		return
	}
	stream := protocol.RunsStreamOf(runID)
	if rc.idx.Err != nil {
		rc.problems = append(rc.problems, Problem{Run: runID, Damage: events.Damage{Stream: stream, Partition: protocol.RunPartition(runID),
			Code: string(perr.CodeOf(rc.idx.Err)), Reason: rc.idx.Err.Error()}})
		return
	}
	s := rc.idx.Sum
	if why := events.CheckIndex(events.IndexView{Status: s.Status, LastSeq: s.LastSeq, LastDigest: s.LastDigest},
		events.HistoryView{Tip: rc.tip, Final: rc.final, AtDigest: rc.atDigest, AtFound: rc.atFound}); why != "" {
		rc.problems = append(rc.problems, Problem{Run: runID, Damage: indexDamage(runID, s, why)})
	}
}

// indexDamage is the damage of a history that lost what the index recorded.
func indexDamage(runID string, s events.Summary, why string) events.Damage {
	return events.Damage{Seq: s.LastSeq, Stream: protocol.RunsStreamOf(runID), Partition: protocol.RunPartition(runID),
		Code: string(events.CodeHistoryBroken), Reason: why, Digest: s.LastDigest}
}

// Verify checks one run's history: every stored message reads, stands where
// it is and links to the one before it (the chain), and the history holds
// what the run index recorded (its final status, its last sequence and
// digest). It reads with direct gets only (operators and observers may).
// Problems are in the report, not an error; an error means it could not
// read.
func (c *Client) Verify(ctx context.Context, runID string) (VerifyReport, error) {
	var r VerifyReport
	if err := events.ValidateID("run ID", runID); err != nil {
		return r, err
	}
	// The index first: it is written after the history, so read in this
	// order an entry is never ahead of a healthy history.
	rc := &runCheck{}
	sum, found, err := index.Get(ctx, c.store.Reader(), c.ns, runID)
	switch {
	case perr.CodeOf(err) == index.CodeBadEntry:
		rc.idx = &index.Entry{RunID: runID, Err: err}
	case err != nil:
		return r, err
	case found:
		rc.idx = &index.Entry{RunID: runID, Sum: sum}
	}
	raw, err := c.store.RawHistory(ctx, runID)
	if err != nil {
		return r, err
	}
	if len(raw) == 0 && rc.idx == nil {
		return r, notFound(runID)
	}
	for _, m := range raw {
		rc.message(runID, events.ReadMessage(c.ns, runID, m))
	}
	if len(raw) == 0 {
		rc.problems = append(rc.problems, Problem{Run: runID, Damage: indexDamage(runID, rc.idx.Sum,
			fmt.Sprintf("the run index has the run (status %s at seq %d), its history is gone", rc.idx.Sum.Status, rc.idx.Sum.LastSeq))})
	} else {
		rc.finish(runID)
	}
	r.Runs, r.Messages, r.Unchained, r.Problems = 1, rc.msgs, rc.unchained, rc.problems
	losses, _, err := protocol.RunsStreamLosses(ctx, c.js)
	if err != nil {
		return r, err
	}
	for _, l := range losses {
		if l.Stream == protocol.RunsStreamOf(runID) {
			r.Lost = append(r.Lost, l)
		}
	}
	if r.Problems == nil {
		r.Problems = []Problem{}
	}
	return r, nil
}

// VerifyAll checks every run of the namespace as Verify does, walking the
// run streams (every stored message, in order, with batched direct gets)
// and the run index (runs it has whose history is gone), and reports what
// the streams' states say was lost and the messages a stream counts but
// cannot return. progress, when set, is called after each batch read.
func (c *Client) VerifyAll(ctx context.Context, progress func(messages int)) (VerifyReport, error) {
	var r VerifyReport
	entries, err := index.ReadAll(ctx, c.store.Reader(), c.ns)
	if err != nil {
		return r, err
	}
	runs := map[string]*runCheck{}
	check := func(id string) *runCheck {
		rc := runs[id]
		if rc == nil {
			rc = &runCheck{}
			runs[id] = rc
		}
		return rc
	}
	for i := range entries {
		if entries[i].RunID != "" {
			check(entries[i].RunID).idx = &entries[i]
		}
	}
	losses, states, err := protocol.RunsStreamLosses(ctx, c.js)
	if err != nil {
		return r, err
	}
	r.Lost = losses
	reader := c.store.Reader()
	for p, st := range states {
		lost := map[uint64]bool{}
		for _, s := range st.Seqs {
			lost[s] = true
		}
		expect := st.First // the next sequence the stream should return
		var unreadable []uint64
		skipped := func(upTo uint64) {
			for s := expect; s < upTo && st.First > 0; s++ {
				if !lost[s] {
					unreadable = append(unreadable, s)
				}
			}
		}
		for from := uint64(1); ; {
			msgs, pending, err := reader.Batch(ctx, st.Stream, c.store.AllRunsFilter(p), from, protocol.FollowBatch)
			if err != nil {
				return r, err
			}
			for _, m := range msgs {
				skipped(m.Seq)
				expect, from = m.Seq+1, m.Seq+1
				r.Messages++
				id := events.RunIDOfSubject(c.ns, m.Subject)
				if events.ValidateID("run ID", id) != nil {
					continue
				}
				check(id).message(id, events.ReadMessage(c.ns, id, m))
			}
			if progress != nil {
				progress(r.Messages)
			}
			if pending == 0 || len(msgs) == 0 {
				break
			}
		}
		if st.Msgs > 0 {
			skipped(st.Last + 1)
		}
		if len(unreadable) > 0 {
			if r.Unreadable == nil {
				r.Unreadable = map[string]int{}
			}
			r.Unreadable[st.Stream] = len(unreadable)
			r.Problems = append(r.Problems, Problem{Run: "?", Damage: events.Damage{Seq: unreadable[0], Stream: st.Stream, Partition: p,
				Code: string(events.CodeHistoryBroken),
				Reason: fmt.Sprintf("the stream counts %d message(s) it cannot return, at seq %s (a damaged block: their checksum fails); the runs they belonged to are reported by their chain or the run index",
					len(unreadable), protocol.SeqRanges(unreadable))}})
		}
	}
	ids := make([]string, 0, len(runs))
	for id := range runs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		rc := runs[id]
		if rc.msgs == 0 {
			if rc.idx.Err == nil {
				rc.problems = append(rc.problems, Problem{Run: id, Damage: indexDamage(id, rc.idx.Sum,
					fmt.Sprintf("the run index has the run (status %s at seq %d), its history is gone", rc.idx.Sum.Status, rc.idx.Sum.LastSeq))})
			} else {
				rc.finish(id)
			}
		} else {
			rc.finish(id)
		}
		r.Unchained += rc.unchained
		r.Problems = append(r.Problems, rc.problems...)
	}
	r.Runs = len(runs)
	if r.Problems == nil {
		r.Problems = []Problem{}
	}
	return r, nil
}
