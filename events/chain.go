package events

import (
	"fmt"

	"github.com/polos-run/polos/perr"
)

// The chain: every stored message of a run's history names the message it
// follows, by sequence (PrevSeq) and digest (Prev, the sha256 of its wire
// bytes). The first message, run_started, names none. Store.Append sets
// both from the Tip the caller says it follows, so every writer (an
// executor's journal, AppendSignal, a client's start, group commit) chains
// its events without doing anything itself (docs/adr/0008-history-chain.md).
//
// A reader that walks the history checks each link (CheckLink): a message
// that names another predecessor than the one before it shows that a
// message was lost (a gap), changed (its digest is not the one its
// successor recorded), reordered or replaced. Messages written before the
// chain existed name none and verify as unchained, not as damage; once a
// message of a run carries a link, every later one must.

// CodeHistoryBroken: a run's history does not hold together: a link of the
// chain names another predecessor than the message before it (a message
// lost, changed, reordered or replaced), or the run index recorded more of
// the history than the stream still holds (a lost tail, a reused sequence).
const CodeHistoryBroken perr.Code = "HISTORY_BROKEN"

// Tip names the last stored message of a run's history: its sequence and
// digest. An append follows a tip (the zero Tip creates the run).
type Tip struct {
	Seq    uint64 `json:"seq"`
	Digest string `json:"digest,omitempty"`
}

// TipOf is the tip of hist: its last event's sequence and digest (the
// zero Tip for an empty history). A message's priors share its sequence
// and digest (Expand), and an unreadable stand-in carries the digest of
// the stored bytes, so the tip of any history read from the store names
// its last stored message.
func TipOf(hist []Event) Tip {
	if len(hist) == 0 {
		return Tip{}
	}
	last := hist[len(hist)-1]
	return Tip{Seq: last.Seq, Digest: last.Digest}
}

// TipOfEvent is the tip an appended or read event leaves.
func TipOfEvent(e *Event) Tip { return Tip{Seq: e.Seq, Digest: e.Digest} }

// Chained reports whether e carries a link (written by a Polos with the chain).
func (e *Event) Chained() bool { return e.Prev != "" || e.PrevSeq != 0 }

// Break is a link of the chain that does not hold: the message at Seq
// names (NamedSeq, NamedDigest) as its predecessor, the history has
// (HistorySeq, HistoryDigest) before it.
type Break struct {
	Seq           uint64 `json:"seq"`
	NamedSeq      uint64 `json:"named_seq"`
	NamedDigest   string `json:"named_digest,omitempty"`
	HistorySeq    uint64 `json:"history_seq"`
	HistoryDigest string `json:"history_digest,omitempty"`
	Reason        string `json:"reason"`
}

// CheckLink checks that own, the event of the stored message right after
// prev in a run's history (prev is the zero Tip for the first message),
// links to prev. chained says whether an earlier message of the run
// carried a link. It returns nil when the link holds or own is an
// unchained message of a history that is not chained yet. Pure.
func CheckLink(prev Tip, chained bool, own Event) *Break {
	b := &Break{Seq: own.Seq, NamedSeq: own.PrevSeq, NamedDigest: own.Prev, HistorySeq: prev.Seq, HistoryDigest: prev.Digest}
	switch {
	case prev.Seq == 0 && own.Chained():
		b.Reason = fmt.Sprintf("the run's first message names a predecessor (seq %d, digest %s)", own.PrevSeq, short(own.Prev))
	case prev.Seq == 0:
		return nil
	case !own.Chained() && chained:
		b.Reason = fmt.Sprintf("the message carries no link after chained ones (the message before it is seq %d, digest %s)", prev.Seq, short(prev.Digest))
	case !own.Chained():
		return nil // written before the chain existed
	case own.PrevSeq > prev.Seq:
		b.Reason = fmt.Sprintf("a gap: the message follows seq %d (digest %s), the history holds seq %d (digest %s) before it: the run's messages after seq %d up to seq %d are missing",
			own.PrevSeq, short(own.Prev), prev.Seq, short(prev.Digest), prev.Seq, own.PrevSeq)
	case own.PrevSeq < prev.Seq:
		b.Reason = fmt.Sprintf("the message follows seq %d (digest %s), but seq %d (digest %s) stands before it: reordered, or written over a reused sequence",
			own.PrevSeq, short(own.Prev), prev.Seq, short(prev.Digest))
	case own.Prev != prev.Digest:
		b.Reason = fmt.Sprintf("the message follows seq %d with digest %s, the message at seq %d has digest %s: it was changed or replaced",
			own.PrevSeq, short(own.Prev), prev.Seq, short(prev.Digest))
	default:
		return nil
	}
	return b
}

// short abbreviates a digest for messages (the full one is in Break and
// in JSON output).
func short(d string) string {
	switch {
	case d == "":
		return "none"
	case len(d) > 12:
		return d[:12]
	}
	return d
}

// IndexView is what the run index records of a run (index.Put).
type IndexView struct {
	Status     string
	LastSeq    uint64
	LastDigest string
}

// HistoryView is what a reader found in a run's history, enough to compare
// with the index: its tip, whether it holds a final event, and the digest
// of its message at the index's LastSeq (found false when it has none).
type HistoryView struct {
	Tip      Tip
	Final    bool
	AtDigest string
	AtFound  bool
}

// CheckIndex compares the run index's entry with the history. The index is
// written after the history it describes, never before, so an entry ahead
// of the history (read after the entry) means the history lost messages:
// a final status over a history that does not end (a completed run would
// revert to running), a last sequence past the history's end (a lost
// tail), or another message at the recorded sequence (a reused sequence).
// It returns "" when they agree. Pure.
func CheckIndex(idx IndexView, h HistoryView) string {
	switch {
	case IsFinal(idx.Status) && !h.Final:
		return fmt.Sprintf("the run index says %s at seq %d (digest %s), the history does not end: it ends at seq %d (digest %s), its last messages were lost",
			idx.Status, idx.LastSeq, short(idx.LastDigest), h.Tip.Seq, short(h.Tip.Digest))
	case idx.LastSeq > h.Tip.Seq:
		return fmt.Sprintf("the run index recorded seq %d (digest %s, status %s), the history ends at seq %d (digest %s): its last messages were lost",
			idx.LastSeq, short(idx.LastDigest), idx.Status, h.Tip.Seq, short(h.Tip.Digest))
	case idx.LastSeq == 0 || idx.LastDigest == "":
		return "" // an entry written before the index recorded digests
	case !h.AtFound:
		return fmt.Sprintf("the run index recorded seq %d (digest %s), the history has no message at that sequence: it was lost",
			idx.LastSeq, short(idx.LastDigest))
	case h.AtDigest != idx.LastDigest:
		return fmt.Sprintf("sequence %d was reused: the run index recorded digest %s there, the history holds digest %s",
			idx.LastSeq, short(idx.LastDigest), short(h.AtDigest))
	}
	return ""
}

// IndexMismatch is CheckIndex of a run index entry (a summary) and a full
// history.
func IndexMismatch(idx Summary, hist []Event) string {
	return CheckIndex(IndexView{Status: idx.Status, LastSeq: idx.LastSeq, LastDigest: idx.LastDigest}, ViewOf(hist, idx.LastSeq))
}

// ViewOf is the HistoryView of a full history for an index entry that
// recorded atSeq.
func ViewOf(hist []Event, atSeq uint64) HistoryView {
	v := HistoryView{Tip: TipOf(hist)}
	for _, e := range hist {
		if e.Type.IsTerminal() {
			v.Final = true
		}
		if e.Seq == atSeq && atSeq != 0 {
			v.AtDigest, v.AtFound = e.Digest, true
		}
	}
	return v
}
