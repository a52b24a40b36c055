package dispatch

import (
	"encoding/json"
	"testing"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// FuzzDecodeRequest: no payload makes decoding panic, and every failure is
// a coded CodeBadRequest error.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{"", "{}", "null", "[]", `{"info":{"id":"x","provider":"local"},"req":{"path":"a"}}`,
		`{"spec":{"provider":"local","env":{"A":"b"}}}`, `{"info":{"id":""}}`, `{"req":[1,2]}`, "\xff"} {
		f.Add("read", []byte(s))
		f.Add("create", []byte(s))
	}
	f.Fuzz(func(t *testing.T, op string, data []byte) {
		r, err := DecodeRequest(op, data)
		if err != nil {
			if perr.CodeOf(err) != sandbox.CodeBadRequest {
				t.Fatalf("uncoded error %v", err)
			}
			return
		}
		for _, v := range []any{&sandbox.ExecRequest{}, &sandbox.ReadRequest{}, &sandbox.WriteRequest{}, &sandbox.EditRequest{}, &sandbox.GlobRequest{}, &sandbox.GrepRequest{}} {
			if err := decodeToolRequest(op, r.Req, v); err != nil && perr.CodeOf(err) != sandbox.CodeBadRequest {
				t.Fatalf("uncoded error %v", err)
			}
		}
	})
}

func TestWireErrorRoundTrip(t *testing.T) {
	in := perr.Wrap(perr.New("INNER", "", "inner"), sandbox.CodeNotFound, "the fix", "the message %d", 1)
	data, _ := json.Marshal(toWire(in))
	var w WireError
	if err := json.Unmarshal(data, &w); err != nil {
		t.Fatal(err)
	}
	out := w.Err(sandbox.CodeProvider)
	var pe *perr.Error
	if !perr.Has(out, sandbox.CodeNotFound) || !asPerr(out, &pe) || pe.Fix != "the fix" || pe.Msg != "the message 1: [POLOS-INNER] inner" {
		t.Errorf("round trip gave %#v", out)
	}
	if got := toWire(errString("plain")); got.Code != string(sandbox.CodeProvider) || got.Message != "plain" {
		t.Errorf("uncoded error became %+v", got)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func asPerr(err error, pe **perr.Error) bool {
	p, ok := err.(*perr.Error)
	*pe = p
	return ok
}
