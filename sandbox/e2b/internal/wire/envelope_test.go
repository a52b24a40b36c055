package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	for _, p := range []string{`{}`, ``, `{"event":{"start":{"pid":1}}}`} {
		if err := WriteEnvelope(&buf, FlagMessage, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	WriteEnvelope(&buf, FlagEndStream, []byte(`{}`))
	if got := buf.Bytes()[:5]; !bytes.Equal(got, []byte{0, 0, 0, 0, 2}) {
		t.Errorf("header bytes %v, want flag 0 and big-endian length 2", got)
	}
	for _, want := range []string{`{}`, ``, `{"event":{"start":{"pid":1}}}`} {
		flags, p, err := ReadEnvelope(&buf, MaxEnvelopeBytes)
		if err != nil || flags != FlagMessage || string(p) != want {
			t.Fatalf("read %x %q %v, want %q", flags, p, err, want)
		}
	}
	if flags, _, err := ReadEnvelope(&buf, MaxEnvelopeBytes); err != nil || flags != FlagEndStream {
		t.Fatalf("end-of-stream: %x %v", flags, err)
	}
	if _, _, err := ReadEnvelope(&buf, MaxEnvelopeBytes); err != io.EOF {
		t.Errorf("at a boundary: %v, want io.EOF", err)
	}
	for _, cut := range [][]byte{{0}, {0, 0, 0, 0}, {0, 0, 0, 0, 3, '{'}} {
		if _, _, err := ReadEnvelope(bytes.NewReader(cut), MaxEnvelopeBytes); err != io.ErrUnexpectedEOF {
			t.Errorf("cut %v: %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
	if _, _, err := ReadEnvelope(bytes.NewReader([]byte{0, 0, 0, 1, 0}), 10); !errors.Is(err, ErrEnvelopeTooLarge) {
		t.Errorf("oversized: %v", err)
	}
}

func TestInt64JSON(t *testing.T) {
	var e EntryInfo
	for _, in := range []string{`{"size":"11"}`, `{"size":11}`} {
		if err := json.Unmarshal([]byte(in), &e); err != nil || e.Size != 11 {
			t.Errorf("%s: %d %v", in, e.Size, err)
		}
	}
	b, _ := json.Marshal(EntryInfo{Name: "a", Path: "/a", Size: 11})
	if !bytes.Contains(b, []byte(`"size":"11"`)) {
		t.Errorf("int64 not written as a string: %s", b)
	}
}

// FuzzReadEnvelope: any input gives either envelopes whose lengths add up
// to what was consumed, or an error; never a panic or a huge allocation.
func FuzzReadEnvelope(f *testing.F) {
	f.Add(AppendEnvelope(AppendEnvelope(nil, FlagMessage, []byte(`{"event":{}}`)), FlagEndStream, []byte(`{}`)))
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		consumed := 0
		for {
			flags, p, err := ReadEnvelope(r, 1<<16)
			if err != nil {
				if err == io.EOF && consumed != len(data) {
					t.Fatalf("io.EOF after %d of %d bytes", consumed, len(data))
				}
				return
			}
			consumed += EnvelopeHeaderLen + len(p)
			if again := AppendEnvelope(nil, flags, p); !bytes.Equal(again, data[consumed-len(again):consumed]) {
				t.Fatalf("re-encoding differs")
			}
		}
	})
}
