package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/polos-run/polos/perr"
)

// Wire format: magic byte 'P', format version byte, msgpack body.
//
// Version 1 is one event. Fields PrevSeq and Prev (the chain, chain.go)
// need no new version: a reader without them skips them, and a reader with
// them reads an event without them as written before the chain existed.
// Version 2 adds Prior: events that logically
// precede the message's own event and were stored with it (a step's
// completion riding on the next durable call; docs/adr/0006). An event
// without priors is still written as version 1, so older readers read
// every history that does not use the newer form, and refuse (with
// CodeUnknownVersion) the ones that do rather than dropping events.
const (
	wireMagic     byte  = 'P'
	FormatVersion uint8 = 2
	formatSingle  uint8 = 1
)

// Decode error codes.
const (
	CodeGarbage        perr.Code = "EVENT_GARBAGE"         // not a Polos event
	CodeTruncated      perr.Code = "EVENT_TRUNCATED"       // cut short
	CodeUnknownVersion perr.Code = "EVENT_UNKNOWN_VERSION" // written by a newer Polos
	CodeInvalid        perr.Code = "EVENT_INVALID"         // decodes, but a required field is missing
)

// Encode returns the wire bytes of e and sets e.Digest.
func Encode(e *Event) ([]byte, error) {
	if e.V == 0 {
		e.V = formatSingle
		if len(e.Prior) > 0 {
			e.V = FormatVersion
		}
	}
	var buf bytes.Buffer
	buf.Grow(64 + len(e.Data))
	buf.WriteByte(wireMagic)
	buf.WriteByte(e.V)
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true) // deterministic bytes for the same event
	if err := enc.Encode(e); err != nil {
		return nil, perr.Wrap(err, CodeInvalid, "", "cannot encode %s event", e.Type)
	}
	b := buf.Bytes()
	e.Digest = Digest(b)
	return b, nil
}

// Digest is the hex sha256 of wire bytes.
func Digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// Decode parses wire bytes. It never panics and its memory use is bounded
// by a small multiple of len(b): garbage, a truncated message, a shape no
// Polos writer produces (checkShape) or an unknown format version give a
// coded error saying what was found.
func Decode(b []byte) (Event, error) {
	var e Event
	if len(b) < 2 {
		return e, perr.New(CodeTruncated, "the message was cut short; check the stream for corruption",
			"event is %d bytes, expected at least 2 (magic and version)", len(b))
	}
	if b[0] != wireMagic {
		return e, perr.New(CodeGarbage, "only Polos should publish on polos.<ns>.run.> subjects",
			"event starts with byte 0x%02x, expected 0x%02x ('P'): not a Polos event", b[0], wireMagic)
	}
	if b[1] == 0 || b[1] > FormatVersion {
		return e, perr.New(CodeUnknownVersion, "upgrade this Polos binary to read histories written by a newer one",
			"event format version %d, this binary reads versions 1..%d", b[1], FormatVersion)
	}
	if err := checkShape(b[2:]); err != nil {
		return Event{}, err
	}
	dec := msgpack.NewDecoder(bytes.NewReader(b[2:]))
	dec.DisallowUnknownFields(false)
	if err := dec.Decode(&e); err != nil {
		code := CodeGarbage
		if isEOF(err) {
			code = CodeTruncated
		}
		return Event{}, perr.Wrap(err, code, "the message was not written by Polos or was cut short", "cannot decode event body")
	}
	if e.V != b[1] {
		return Event{}, perr.New(CodeInvalid, "", "event body says version %d, header says %d", e.V, b[1])
	}
	if e.Type == "" || e.RunID == "" {
		return Event{}, perr.New(CodeInvalid, "only Polos should publish on polos.<ns>.run.> subjects",
			"event has no type or run ID (type %q, run %q)", e.Type, e.RunID)
	}
	if e.Type == Unreadable || e.Pos < 0 {
		return Event{}, perr.New(CodeInvalid, "only Polos should publish on polos.<ns>.run.> subjects",
			"event has type %q and position %d (type %q is reserved for readers; positions are never negative)", e.Type, e.Pos, Unreadable)
	}
	if len(e.Prior) > 0 && e.V < 2 {
		return Event{}, perr.New(CodeInvalid, "only Polos should publish on polos.<ns>.run.> subjects",
			"a version %d event carries %d prior events; priors need version 2", e.V, len(e.Prior))
	}
	for i, p := range e.Prior {
		if p.Type == "" || len(p.Prior) > 0 || p.Type == Unreadable || p.Pos < 0 || p.Chained() {
			return Event{}, perr.New(CodeInvalid, "only Polos should publish on polos.<ns>.run.> subjects",
				"prior event %d of a %s event has no type, a reserved type, a negative position, nested priors or a link of its own", i, e.Type)
		}
	}
	e.Digest = Digest(b)
	return e, nil
}

func isEOF(err error) bool {
	s := err.Error()
	return bytes.Contains([]byte(s), []byte("EOF"))
}

// Expand returns the events one stored message holds, in history order:
// its priors, then the event itself. Priors share the message's run, writer,
// sequence and digest. Every reader of histories goes through it.
func Expand(e Event) []Event {
	if len(e.Prior) == 0 {
		return []Event{e}
	}
	out := make([]Event, 0, len(e.Prior)+1)
	for _, p := range e.Prior {
		p.V, p.RunID, p.Seq, p.Digest, p.PrevSeq, p.Prev = e.V, e.RunID, e.Seq, e.Digest, e.PrevSeq, e.Prev
		if p.Writer == "" {
			p.Writer = e.Writer
		}
		if p.Time == 0 {
			p.Time = e.Time
		}
		out = append(out, p)
	}
	e.Prior = nil
	return append(out, e)
}
