package events

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Unreadable is the type of the stand-in a reader puts in a history in
// place of a stored message it cannot use: bytes that do not decode, an
// event of another run, or an event that cannot stand where it is
// (docs/adr/0007-unreadable-events.md). Nobody stores it (Decode refuses
// the type); it carries the message's sequence, so compare-and-swap
// appends after it still name the run's real last message, and its Err
// and attributes say what was found (see DamageOf).
const Unreadable Type = "unreadable"

// Damage error codes (the decode codes EVENT_GARBAGE, EVENT_TRUNCATED,
// EVENT_UNKNOWN_VERSION and EVENT_INVALID are in codec.go).
const (
	// CodeWrongRun: a decodable event stored on another run's subject, or
	// on a subject that does not end with its type.
	CodeWrongRun perr.Code = "EVENT_WRONG_RUN"
	// CodeOutOfPlace: a decodable event of the run that no Polos writer
	// could have stored at that point of the history (a second
	// run_started, a copy of an earlier message, a position that skips
	// ahead).
	CodeOutOfPlace perr.Code = "EVENT_OUT_OF_PLACE"
	// CodeRunDamaged: the run's history holds an unreadable message, so
	// the run cannot be replayed; it is parked until an operator acts.
	CodeRunDamaged perr.Code = "RUN_DAMAGED"
)

// Damage report limits.
const (
	// DefaultHeadBytes is how many leading bytes of an unreadable message
	// a damage report shows, in hex.
	DefaultHeadBytes = 32
	// MaxReportedDamage bounds the damaged messages a Summary lists (it
	// counts all of them in DamagedMessages).
	MaxReportedDamage = 16
)

// Attributes of an Unreadable stand-in.
const (
	attrStream    = "stream"
	attrPartition = "partition"
	attrSubject   = "subject"
	attrSize      = "size"
	attrHead      = "head"
	attrFound     = "found"
	// a broken link (CodeHistoryBroken)
	attrNamedSeq      = "named_seq"
	attrNamedDigest   = "named_digest"
	attrHistorySeq    = "history_seq"
	attrHistoryDigest = "history_digest"
	attrBreak         = "break"
)

// setBreak records a broken link on a stand-in.
func setBreak(u *Event, b *Break) {
	u.Attrs[attrNamedSeq] = strconv.FormatUint(b.NamedSeq, 10)
	u.Attrs[attrNamedDigest] = b.NamedDigest
	u.Attrs[attrHistorySeq] = strconv.FormatUint(b.HistorySeq, 10)
	u.Attrs[attrHistoryDigest] = b.HistoryDigest
	u.Attrs[attrBreak] = b.Reason
}

// breakOf reads a broken link off a stand-in (nil when it has none).
func breakOf(e Event) *Break {
	reason, ok := e.Attrs[attrBreak]
	if !ok {
		return nil
	}
	b := &Break{Seq: e.Seq, NamedDigest: e.Attr(attrNamedDigest), HistoryDigest: e.Attr(attrHistoryDigest), Reason: reason}
	b.NamedSeq, _ = strconv.ParseUint(e.Attr(attrNamedSeq), 10, 64)
	b.HistorySeq, _ = strconv.ParseUint(e.Attr(attrHistorySeq), 10, 64)
	return b
}

// StoredMsg is one message as a run stream holds it.
type StoredMsg = protocol.Stored

// Damage describes one unreadable message of a run's history: where it is,
// what was found and what is wrong with it.
type Damage struct {
	Seq       uint64    `json:"seq"`
	Stream    string    `json:"stream"`
	Partition int       `json:"partition"`
	Subject   string    `json:"subject,omitempty"`
	Size      int       `json:"size,omitempty"` // bytes stored (not known for an event out of place)
	Head      string    `json:"head,omitempty"` // the first DefaultHeadBytes bytes, hex
	Code      string    `json:"code"`           // why it is unreadable: a decode code, EVENT_WRONG_RUN or EVENT_OUT_OF_PLACE
	Reason    string    `json:"reason"`
	Found     string    `json:"found,omitempty"`     // what a decodable event says it is
	StoredAt  time.Time `json:"stored_at,omitempty"` // when the server stored it (not known for an event out of place)
	Digest    string    `json:"digest,omitempty"`    // the digest of the stored message (what its successor should name)
	// Chain is the broken link, for CodeHistoryBroken at a message: the
	// predecessor the message names and the one the history has.
	Chain *Break `json:"chain,omitempty"`
}

// String renders d for an error message or a log line.
func (d Damage) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "message at seq %d of stream %s (partition %d", d.Seq, d.Stream, d.Partition)
	if d.Subject != "" {
		fmt.Fprintf(&b, ", subject %s", d.Subject)
	}
	b.WriteString(")")
	if d.Size > 0 || d.Head != "" {
		fmt.Fprintf(&b, ", %d bytes starting %s", d.Size, d.Head)
	}
	if d.Found != "" {
		fmt.Fprintf(&b, ", holding %s", d.Found)
	}
	b.WriteString(": ")
	b.WriteString(d.Reason)
	return b.String()
}

// ReadMessage turns a stored message of run runID (namespace ns) into the
// events it holds (Expand), or into one Unreadable stand-in when it does
// not decode, belongs to another run, or sits on a subject that is not its
// type's. It never fails: what cannot be read is reported, not dropped.
func ReadMessage(ns, runID string, m StoredMsg) []Event {
	ev, err := Decode(m.Data)
	found := ""
	if err == nil {
		found = describeEvent(ev)
		err = placement(ns, runID, m.Subject, ev)
	}
	if err != nil {
		u := unreadable(runID, m.Seq, m.Time.UnixNano(), perr.CodeOf(err), err.Error())
		u.Digest = Digest(m.Data) // the chain links to the stored bytes, readable or not
		if m.Stream != "" {
			u.Attrs[attrStream] = m.Stream
		}
		u.Attrs[attrSubject] = m.Subject
		u.Attrs[attrSize] = strconv.Itoa(len(m.Data))
		u.Attrs[attrHead] = hex.EncodeToString(m.Data[:min(len(m.Data), DefaultHeadBytes)])
		if found != "" {
			u.Attrs[attrFound] = found
		}
		return []Event{u}
	}
	ev.Seq = m.Seq
	return Expand(ev)
}

// placement checks that a decoded event belongs where it is stored: its
// run ID is the subject's, and the subject is the one Polos publishes that
// event type on (subject "" is not checked).
func placement(ns, runID, subject string, ev Event) error {
	if ev.RunID != runID {
		return perr.New(CodeWrongRun, "only Polos executors and clients should publish on polos.<ns>.run.> subjects",
			"the event belongs to run %s but is stored on run %s's subject", ev.RunID, runID)
	}
	if want := protocol.RunSubject(ns, runID, string(ev.Type)); subject != "" && subject != want {
		return perr.New(CodeWrongRun, "only Polos executors and clients should publish on polos.<ns>.run.> subjects",
			"a %s event is stored on subject %s, Polos stores it on %s", ev.Type, subject, want)
	}
	return nil
}

// unreadable builds a stand-in for the message at seq of run runID.
func unreadable(runID string, seq uint64, at int64, code perr.Code, reason string) Event {
	return Event{Type: Unreadable, RunID: runID, Seq: seq, Time: at,
		Err: &ErrorInfo{Code: string(code), Message: reason},
		Attrs: map[string]string{
			attrStream:    protocol.RunsStreamOf(runID),
			attrPartition: strconv.Itoa(protocol.RunPartition(runID)),
		}}
}

func describeEvent(e Event) string {
	s := fmt.Sprintf("a %s event of run %s", e.Type, e.RunID)
	if e.Pos > 0 {
		s += fmt.Sprintf(" at position %d", e.Pos)
	}
	if e.Name != "" {
		s += fmt.Sprintf(" named %q", e.Name)
	}
	if e.Writer != "" {
		s += " written by " + e.Writer
	}
	return s
}

// DamageOf returns the damage an Unreadable stand-in reports; ok is false
// for any other event.
func DamageOf(e Event) (d Damage, ok bool) {
	if e.Type != Unreadable {
		return Damage{}, false
	}
	d = Damage{Seq: e.Seq, Stream: e.Attr(attrStream), Subject: e.Attr(attrSubject), Head: e.Attr(attrHead), Found: e.Attr(attrFound),
		Digest: e.Digest, Chain: breakOf(e)}
	d.Partition, _ = strconv.Atoi(e.Attr(attrPartition))
	d.Size, _ = strconv.Atoi(e.Attr(attrSize))
	if e.Time > 0 {
		d.StoredAt = e.At()
	}
	if e.Err != nil {
		d.Code, d.Reason = e.Err.Code, e.Err.Message
	}
	return d, true
}

// Damages returns the damage in a history (after Vet): the first
// MaxReportedDamage reports and how many unreadable messages there are.
func Damages(hist []Event) (first []Damage, total int) {
	for _, e := range hist {
		if d, ok := DamageOf(e); ok {
			total++
			if len(first) < MaxReportedDamage {
				first = append(first, d)
			}
		}
	}
	return first, total
}

// DamagedError is the coded error of a run whose history holds total
// unreadable messages, first among them ds[0]. It says what to do.
func DamagedError(runID string, ds []Damage, total int) *perr.Error {
	if len(ds) == 0 {
		return nil
	}
	more := ""
	if total > 1 {
		more = fmt.Sprintf(" (%d unreadable messages; the first is shown)", total)
	}
	return perr.New(CodeRunDamaged,
		fmt.Sprintf("see the stored bytes with `polos history %s --raw`; restore stream %s from a backup, or end the run with `polos cancel %s` (it is cancelled without running its code)", runID, ds[0].Stream, runID),
		"run %s is parked: its history cannot be replayed%s: %s", runID, more, ds[0])
}

// RunIDOfSubject returns the run ID in a run event subject
// polos.<ns>.run.<p>.<runID>.<type> of namespace ns, or "" when subject is
// not one.
func RunIDOfSubject(ns, subject string) string {
	rest, ok := strings.CutPrefix(subject, strings.TrimSuffix(protocol.RunsFilter(ns), ">"))
	if !ok {
		return ""
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) < 3 || parts[1] == "" {
		return ""
	}
	return parts[1]
}
