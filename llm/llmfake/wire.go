package llmfake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
)

// inputPieceBytes is how the fake cuts tool-call JSON into streamed
// fragments, so clients must really concatenate partial JSON.
const inputPieceBytes = 12

// encode marshals v as the real APIs do: compact, without escaping <, >
// and & (encoding/json's default would rewrite tool inputs).
func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := encode(v)
	if err != nil {
		http.Error(w, "fake: cannot encode answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// sseWriter writes Server-Sent Events and flushes each one.
type sseWriter struct {
	w http.ResponseWriter
	f http.Flusher
}

func startSSE(w http.ResponseWriter) *sseWriter {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	return &sseWriter{w: w, f: f}
}

// event writes one event; an empty name writes a data-only event.
func (s *sseWriter) event(name string, v any) {
	data, err := encode(v)
	if err != nil {
		data = []byte(fmt.Sprintf(`{"type":"error","error":{"type":"api_error","message":%q}}`, err.Error()))
	}
	s.raw(name, string(data))
}

func (s *sseWriter) raw(name, data string) {
	if name != "" {
		fmt.Fprintf(s.w, "event: %s\n", name)
	}
	fmt.Fprintf(s.w, "data: %s\n\n", data)
	if s.f != nil {
		s.f.Flush()
	}
}

// jsonPieces cuts raw JSON into fragments of inputPieceBytes (on rune
// boundaries, so each fragment is valid UTF-8).
func jsonPieces(raw []byte) []string {
	s := string(raw)
	var out []string
	for len(s) > 0 {
		n := min(inputPieceBytes, len(s))
		for n < len(s) && !isRuneStart(s[n]) {
			n++
		}
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only values the fake itself decoded from JSON get here.
		panic("llmfake: re-encoding decoded JSON: " + err.Error())
	}
	return b
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

// without returns the items of want not in got.
func without(want, got []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			out = append(out, w)
		}
	}
	return out
}
