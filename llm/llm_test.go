package llm

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polos-run/polos/perr"
)

func sampleRequest() Request {
	temp := 0.2
	return Request{
		Model:  "m",
		System: "sys",
		Messages: []Message{
			{Role: RoleUser, Text: "hi"},
			{Role: RoleAssistant, Text: "ok", ToolCalls: []ToolCall{{ID: "c1", Name: "exec", Input: json.RawMessage(`{"a":1,"b":[true,null]}`)}}},
			{Role: RoleTool, ToolResults: []ToolResult{{ToolCallID: "c1", Content: "done", IsError: true}}},
		},
		Tools:       []Tool{{Name: "exec", Description: "d", InputSchema: json.RawMessage(`{"type":"object"}`)}},
		MaxTokens:   100,
		Temperature: &temp,
	}
}

func TestRequestDigestIsStableAndCanonical(t *testing.T) {
	a := sampleRequest()
	if RequestDigest(a) != RequestDigest(sampleRequest()) {
		t.Fatal("same request, different digest")
	}
	if len(RequestDigest(a)) != 64 {
		t.Fatalf("digest %q is not hex sha256", RequestDigest(a))
	}
	// Key order and whitespace in raw JSON do not matter.
	b := sampleRequest()
	b.Messages[1].ToolCalls[0].Input = json.RawMessage(" { \"b\" : [true, null], \"a\" : 1 } ")
	if RequestDigest(a) != RequestDigest(b) {
		t.Fatal("equivalent JSON inputs give different digests")
	}
}

func TestRequestDigestSeesEveryField(t *testing.T) {
	base := RequestDigest(sampleRequest())
	t2 := 0.3
	changes := map[string]func(*Request){
		"model":          func(r *Request) { r.Model = "n" },
		"system":         func(r *Request) { r.System = "sys2" },
		"role":           func(r *Request) { r.Messages[0].Role = RoleAssistant },
		"text":           func(r *Request) { r.Messages[0].Text = "hi!" },
		"call id":        func(r *Request) { r.Messages[1].ToolCalls[0].ID = "c2" },
		"call name":      func(r *Request) { r.Messages[1].ToolCalls[0].Name = "write" },
		"call input":     func(r *Request) { r.Messages[1].ToolCalls[0].Input = json.RawMessage(`{"a":2,"b":[true,null]}`) },
		"invalid input":  func(r *Request) { r.Messages[1].ToolCalls[0].Input = json.RawMessage(`{"a":1,`) },
		"result id":      func(r *Request) { r.Messages[2].ToolResults[0].ToolCallID = "c9" },
		"result content": func(r *Request) { r.Messages[2].ToolResults[0].Content = "done." },
		"result error":   func(r *Request) { r.Messages[2].ToolResults[0].IsError = false },
		"tool":           func(r *Request) { r.Tools[0].Description = "e" },
		"schema":         func(r *Request) { r.Tools[0].InputSchema = json.RawMessage(`{"type":"string"}`) },
		"max tokens":     func(r *Request) { r.MaxTokens = 101 },
		"temperature":    func(r *Request) { r.Temperature = &t2 },
		"no temperature": func(r *Request) { r.Temperature = nil },
		"extra message":  func(r *Request) { r.Messages = append(r.Messages, Message{Role: RoleUser}) },
		// Field boundaries are unambiguous.
		"shifted text": func(r *Request) { r.Model, r.System = "ms", "ys" },
	}
	seen := map[string]string{base: "base"}
	for name, change := range changes {
		r := sampleRequest()
		change(&r)
		d := RequestDigest(r)
		if prev, dup := seen[d]; dup {
			t.Errorf("%s: digest equals %s's", name, prev)
		}
		seen[d] = name
	}
	// A string that happens to hold the invalid bytes is not confused with them.
	x, y := sampleRequest(), sampleRequest()
	x.Messages[1].ToolCalls[0].Input = json.RawMessage(`{bad`)
	y.Messages[1].ToolCalls[0].Input = json.RawMessage(`"{bad"`)
	if RequestDigest(x) == RequestDigest(y) {
		t.Error("invalid JSON and a JSON string with the same text collide")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		h    map[string]string
		want time.Duration
	}{
		{"none", nil, 0},
		{"seconds", map[string]string{"Retry-After": "7"}, 7 * time.Second},
		{"fractional seconds", map[string]string{"Retry-After": "1.5"}, 1500 * time.Millisecond},
		{"http date", map[string]string{"Retry-After": now.Add(30 * time.Second).Format(http.TimeFormat)}, 30 * time.Second},
		{"past date", map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{"ms wins", map[string]string{"Retry-After": "7", "Retry-After-Ms": "250"}, 250 * time.Millisecond},
		{"bad ms falls back", map[string]string{"Retry-After": "3", "Retry-After-Ms": "soon"}, 3 * time.Second},
		{"garbage", map[string]string{"Retry-After": "soon"}, 0},
		{"negative", map[string]string{"Retry-After": "-5"}, 0},
		{"absurd", map[string]string{"Retry-After": "1e300"}, 0},
	}
	for _, tc := range cases {
		h := http.Header{}
		for k, v := range tc.h {
			h.Set(k, v)
		}
		if got := ParseRetryAfter(h, now); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHTTPErrorRetryable(t *testing.T) {
	for status, want := range map[int]bool{
		400: false, 401: false, 403: false, 404: false, 413: false, 422: false,
		408: true, 409: true, 429: true, 500: true, 502: true, 503: true, 504: true, StatusOverloaded: true,
	} {
		e := HTTPError(status, http.Header{}, "", time.Now())
		if e.Retryable != want || e.Status != status || e.Message == "" {
			t.Errorf("status %d: %+v, want retryable %v", status, e, want)
		}
	}
	h := http.Header{}
	h.Set(HeaderShouldRetry, "false")
	if HTTPError(503, h, "x", time.Now()).Retryable {
		t.Error("x-should-retry: false ignored")
	}
	h.Set(HeaderShouldRetry, "true")
	if !HTTPError(400, h, "x", time.Now()).Retryable {
		t.Error("x-should-retry: true ignored")
	}
	e := HTTPError(429, http.Header{}, "slow down", time.Now())
	if !strings.Contains(e.Error(), "LLM_PROVIDER_ERROR") || !strings.Contains(e.Error(), "slow down") {
		t.Errorf("Error() = %q", e.Error())
	}
}

func TestTransportError(t *testing.T) {
	ctx := context.Background()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	if e := TransportError(ctx, refused); e == nil || !e.Retryable || e.Status != 0 {
		t.Errorf("connection refused: %+v", e)
	}
	if e := TransportError(ctx, errors.New("unsupported protocol scheme")); e == nil || e.Retryable {
		t.Errorf("config-like error: %+v", e)
	}
	if e := TransportError(ctx, context.DeadlineExceeded); e == nil || !e.Retryable {
		t.Errorf("per-request timeout: %+v", e)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if e := TransportError(cancelled, refused); e != nil {
		t.Errorf("a cancelled ctx is not a provider error: %+v", e)
	}
}

func TestNewReportsBadProviders(t *testing.T) {
	_, err := New(ProviderConfig{Provider: "gpt-local"})
	if perr.CodeOf(err) != CodeBadConfig || !strings.Contains(err.Error(), "anthropic, openai, scripted") {
		t.Errorf("unknown provider: %v", err)
	}
	// This package's tests link no provider: a known name says what to import.
	_, err = New(ProviderConfig{Provider: ProviderAnthropic})
	if perr.CodeOf(err) != CodeBadConfig || !strings.Contains(err.Error(), ProvidersImport) {
		t.Errorf("unlinked provider: %v", err)
	}
}

func TestRegister(t *testing.T) {
	Register("test-provider", func(cfg ProviderConfig) (Model, error) { return nil, errors.New(cfg.Model) })
	if _, err := New(ProviderConfig{Provider: "test-provider", Model: "x"}); err == nil || err.Error() != "x" {
		t.Fatalf("factory not used: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering twice must panic")
		}
	}()
	Register("test-provider", nil)
}

func TestResolveAPIKey(t *testing.T) {
	t.Setenv("POLOS_TEST_KEY", "")
	if _, err := ResolveAPIKey("p", "", "POLOS_TEST_KEY"); perr.CodeOf(err) != CodeBadConfig || !strings.Contains(err.Error(), "export POLOS_TEST_KEY") {
		t.Errorf("missing key: %v", err)
	}
	t.Setenv("POLOS_TEST_KEY", "env")
	if k, _ := ResolveAPIKey("p", "", "POLOS_TEST_KEY"); k != "env" {
		t.Errorf("env key = %q", k)
	}
	if k, _ := ResolveAPIKey("p", "explicit", "POLOS_TEST_KEY"); k != "explicit" {
		t.Errorf("explicit key = %q", k)
	}
}

func TestEstimateTokens(t *testing.T) {
	r := sampleRequest()
	if n := EstimateTokens(r); n <= 0 || n != EstimateTokens(sampleRequest()) {
		t.Fatalf("estimate %d", n)
	}
	if EstimateTextTokens(0) != 1 || EstimateTextTokens(8) != 2 || EstimateTextTokens(9) != 3 {
		t.Fatal("ceil(bytes/4), at least 1")
	}
}

func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[1,2.50,"x"]}`, `null`, ` `, `{"a":`, `[1] x`, `{} ]`, `"\u00e9"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		canon, ok := CanonicalJSON(raw)
		if !ok {
			return
		}
		if !json.Valid(canon) {
			t.Fatalf("canonical form %q of %q is not JSON", canon, raw)
		}
		again, ok := CanonicalJSON(canon)
		if !ok || string(again) != string(canon) {
			t.Fatalf("not idempotent: %q -> %q", canon, again)
		}
	})
}
