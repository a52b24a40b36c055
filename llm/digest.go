package llm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"hash"
	"math"
)

// digestVersion names the canonical encoding; bump it if the encoding ever
// changes so old and new digests can never be confused.
const digestVersion = "polos-llm-request-v1"

// RequestDigest returns a stable SHA-256 (hex) of req. The agent loop records
// it with every LLM step so a replay can tell whether the same turn would be
// asked again.
//
// The encoding is canonical: every field is length-prefixed and tagged, so no
// two different requests share an encoding, and raw JSON (tool inputs and
// schemas) is compared by meaning: valid JSON is re-encoded with sorted keys
// and no insignificant whitespace, while invalid JSON (a model may produce
// it) is hashed byte for byte under a different tag.
func RequestDigest(req Request) string {
	d := digester{h: sha256.New()}
	d.str(digestVersion)
	d.str(req.Model)
	d.str(req.System)
	d.int(int64(len(req.Messages)))
	for _, m := range req.Messages {
		d.str(m.Role)
		d.str(m.Text)
		d.int(int64(len(m.ToolCalls)))
		for _, c := range m.ToolCalls {
			d.str(c.ID)
			d.str(c.Name)
			d.rawJSON(c.Input)
		}
		d.int(int64(len(m.ToolResults)))
		for _, r := range m.ToolResults {
			d.str(r.ToolCallID)
			d.str(r.Content)
			d.bool(r.IsError)
		}
	}
	d.int(int64(len(req.Tools)))
	for _, t := range req.Tools {
		d.str(t.Name)
		d.str(t.Description)
		d.rawJSON(t.InputSchema)
	}
	d.int(int64(req.MaxTokens))
	if req.Temperature == nil {
		d.tag('n')
	} else {
		d.tag('f')
		d.int(int64(math.Float64bits(*req.Temperature)))
	}
	return hex.EncodeToString(d.h.Sum(nil))
}

type digester struct{ h hash.Hash }

func (d digester) tag(t byte) { d.h.Write([]byte{t}) }

func (d digester) int(v int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	d.h.Write(b[:])
}

func (d digester) bytes(t byte, b []byte) {
	d.tag(t)
	d.int(int64(len(b)))
	d.h.Write(b)
}

func (d digester) str(s string) { d.bytes('s', []byte(s)) }

func (d digester) bool(v bool) {
	if v {
		d.tag('T')
	} else {
		d.tag('F')
	}
}

func (d digester) rawJSON(raw json.RawMessage) {
	if canon, ok := CanonicalJSON(raw); ok {
		d.bytes('j', canon)
		return
	}
	d.bytes('r', raw)
}

// CanonicalJSON re-encodes raw with object keys sorted and no insignificant
// whitespace, keeping number literals as written. ok is false when raw is
// not valid JSON; empty input is treated as JSON null.
func CanonicalJSON(raw []byte) (canon []byte, ok bool) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return []byte("null"), true
	}
	if !json.Valid(raw) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, false
	}
	return out, true
}

// EstimateTokens is a deterministic, provider-free token estimate of req
// (about four bytes per token over all text, tool inputs and schemas). The
// scripted model and the fake servers report it as input usage so budgets
// and rate limits behave offline as they would against a real provider.
func EstimateTokens(req Request) int64 {
	n := len(req.System)
	for _, m := range req.Messages {
		n += len(m.Role) + len(m.Text)
		for _, c := range m.ToolCalls {
			n += len(c.ID) + len(c.Name) + len(c.Input)
		}
		for _, r := range m.ToolResults {
			n += len(r.ToolCallID) + len(r.Content)
		}
	}
	for _, t := range req.Tools {
		n += len(t.Name) + len(t.Description) + len(t.InputSchema)
	}
	return EstimateTextTokens(n)
}

// EstimateTextTokens converts a byte count into the estimate EstimateTokens
// uses: ceil(bytes/4), at least 1.
func EstimateTextTokens(byteCount int) int64 {
	return max(1, (int64(byteCount)+3)/4)
}
