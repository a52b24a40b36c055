package events

import (
	"fmt"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// A Vetter checks, one stored message at a time, that a run's history is
// one Polos could have written. Each message decoded and belongs to the run
// (ReadMessage checked that); the vetter checks what only the history
// before it can tell:
//
//   - the first message is run_started, and no later one is;
//   - no message is a byte-for-byte copy of an earlier one (same digest);
//   - a position never skips ahead: the runner claims positions one at a
//     time, so an event at position p follows one at p-1 of the same
//     attempt (run_retry starts the count again);
//   - the message links to the one before it (CheckLink: the chain).
//
// A message that breaks a rule becomes an Unreadable stand-in with
// CodeOutOfPlace, or CodeHistoryBroken for a broken link (the stand-in
// then says which predecessor the message names and which one the history
// has). A stand-in keeps the message's digest, so the next link is checked
// against the message as stored; after a message that does not decode,
// the next link is not checked (it names the bytes before they were
// damaged, which are gone). The rules are what every Polos writer guarantees, not
// heuristics: a history that breaks one was written by something else
// (docs/adr/0007-unreadable-events.md). After an unreadable message the
// position rule is off for the rest of the history, since the lost
// message may have claimed a position.
type Vetter struct {
	msgs    int               // messages checked
	startAt uint64            // seq of run_started
	maxPos  int               // highest position of the current attempt
	blind   bool              // an unreadable message was seen: positions are unknown
	digests map[string]uint64 // digest -> seq of the message that had it
	tip     Tip               // the last message checked
	chained bool              // a message checked so far carried a link
	unlink  bool              // the last message did not decode: skip the next link
}

// Vet returns hist with every message that cannot stand where it is
// replaced by an Unreadable stand-in (hist itself when all can). hist must
// be a full history, from its first message.
func Vet(hist []Event) []Event {
	return (&Vetter{digests: make(map[string]uint64, len(hist))}).vet(hist)
}

func (v *Vetter) vet(hist []Event) []Event {
	var out []Event
	i := 0
	eachMessage(hist, func(msg []Event) {
		got := v.Check(msg)
		if out == nil && (len(got) != len(msg) || got[0].Type != msg[0].Type) {
			out = append(make([]Event, 0, len(hist)), hist[:i]...)
		}
		if out != nil {
			out = append(out, got...)
		}
		i += len(msg)
	})
	if out == nil {
		return hist
	}
	return out
}

// eachMessage calls fn with the events of each stored message of hist:
// consecutive events sharing a sequence (a message's priors and its own
// event). Events without a sequence are messages of their own.
func eachMessage(hist []Event, fn func([]Event)) {
	for i := 0; i < len(hist); {
		j := i + 1
		for j < len(hist) && hist[i].Seq != 0 && hist[j].Seq == hist[i].Seq {
			j++
		}
		fn(hist[i:j])
		i = j
	}
}

// Check vets the events of the next stored message and returns them, or a
// one-event Unreadable stand-in in their place.
func (v *Vetter) Check(msg []Event) []Event {
	if len(msg) == 0 {
		return msg
	}
	if v.digests == nil {
		v.digests = map[string]uint64{}
	}
	own := msg[len(msg)-1]
	first := v.msgs == 0
	v.msgs++
	prevTip, skipLink := v.tip, v.unlink
	v.tip, v.unlink = TipOfEvent(&own), false
	if own.Type == Unreadable {
		v.blind, v.unlink = true, true
		return msg
	}
	wasChained := v.chained
	v.chained = v.chained || own.Chained()
	var brk *Break
	if !skipLink {
		brk = CheckLink(prevTip, wasChained, own)
	}
	reason := ""
	maxPos := v.maxPos
	for _, e := range msg {
		if brk != nil {
			break // the link says more than the rules below
		}
		switch {
		case e.Type == RunStarted && !first && v.startAt > 0:
			reason = fmt.Sprintf("a second run_started (the run started at seq %d)", v.startAt)
		case e.Type == RunStarted && !first:
			reason = "a run_started after the run's first message"
		case e.Type != RunStarted && first:
			reason = fmt.Sprintf("a run's first event is run_started, this one is %s", e.Type)
		case e.Pos > maxPos+1 && !v.blind:
			reason = fmt.Sprintf("position %d, but the run's last position is %d (positions grow one at a time)", e.Pos, maxPos)
		}
		if reason != "" {
			break
		}
		maxPos = max(maxPos, e.Pos)
		if e.Type == RunRetry {
			maxPos = 0
		}
	}
	if prev, dup := v.digests[own.Digest]; reason == "" && brk == nil && dup && own.Digest != "" && prev != own.Seq {
		reason = fmt.Sprintf("a copy of the message at seq %d", prev)
	}
	if reason != "" || brk != nil {
		var u Event
		if brk != nil {
			// A lost message may have claimed a position: positions are
			// unknown from here on, as after unreadable bytes.
			v.blind = true
			u = unreadable(own.RunID, own.Seq, own.Time, CodeHistoryBroken,
				perr.New(CodeHistoryBroken, "restore stream "+protocol.RunsStreamOf(own.RunID)+" from a backup, or end the run with `polos cancel "+own.RunID+"`",
					"the chain breaks at seq %d: %s", own.Seq, brk.Reason).Error())
			setBreak(&u, brk)
		} else {
			u = unreadable(own.RunID, own.Seq, own.Time, CodeOutOfPlace,
				perr.New(CodeOutOfPlace, "only Polos executors and clients should publish on polos.<ns>.run.> subjects",
					"the event cannot stand here: %s", reason).Error())
		}
		u.Attrs[attrFound] = describeEvent(own)
		u.Digest = own.Digest
		return []Event{u}
	}
	if first {
		v.startAt = own.Seq
	}
	v.maxPos = maxPos
	if own.Digest != "" {
		v.digests[own.Digest] = own.Seq
	}
	return msg
}

// Vet is the package function Vet done by v: afterwards v has seen hist
// and Checks what comes after it. v must be new.
func (v *Vetter) Vet(hist []Event) []Event {
	return v.vet(hist)
}
