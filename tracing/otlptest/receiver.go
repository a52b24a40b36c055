// Package otlptest is an OTLP/HTTP trace receiver for tests: it speaks the
// real protocol (protobuf ExportTraceServiceRequest on POST /v1/traces),
// so the official exporter talks to it unchanged.
package otlptest

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Receiver collects every span exported to it.
type Receiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
}

// Start serves a receiver until the test ends and points the standard
// OTLP environment of the test at it (OTEL_EXPORTER_OTLP_ENDPOINT, and a
// short batch delay so spans arrive quickly).
func Start(t testing.TB) *Receiver {
	r := &Receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	if s, ok := t.(interface{ Setenv(string, string) }); ok {
		s.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.srv.URL)
		s.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	}
	return r
}

// URL is the receiver's base URL (the OTLP endpoint).
func (r *Receiver) URL() string { return r.srv.URL }

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want POST /v1/traces with Content-Type application/x-protobuf", http.StatusBadRequest)
		return
	}
	b, err := io.ReadAll(req.Body)
	var m coltrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &m)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range m.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			r.spans = append(r.spans, ss.Spans...)
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// ByID groups the spans received by span id (hex): more than one span
// under an id means it was exported more than once.
func (r *Receiver) ByID() map[string][]*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string][]*tracepb.Span{}
	for _, s := range r.spans {
		k := hex.EncodeToString(s.SpanId)
		m[k] = append(m[k], s)
	}
	return m
}

// Attrs returns a span's string, bool, int and double attributes.
func Attrs(s *tracepb.Span) map[string]any {
	out := map[string]any{}
	for _, a := range s.Attributes {
		switch v := a.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			out[a.Key] = v.StringValue
		case *commonpb.AnyValue_BoolValue:
			out[a.Key] = v.BoolValue
		case *commonpb.AnyValue_IntValue:
			out[a.Key] = v.IntValue
		case *commonpb.AnyValue_DoubleValue:
			out[a.Key] = v.DoubleValue
		}
	}
	return out
}
