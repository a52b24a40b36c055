// Package llmtest is the conformance suite every HTTP llm provider must pass
// against its llmfake server: the same behaviour checked once, for the
// anthropic and openai packages alike.
package llmtest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/llmfake"
	"github.com/polos-run/polos/llm/scripted"
)

// Provider wires one provider to its fake for the suite.
type Provider struct {
	// Start starts the provider's fake server.
	Start func(scripted.Script) *llmfake.Server
	// New builds the provider's model talking to baseURL.
	New func(t *testing.T, baseURL string) llm.Model
}

// ToolScript is the scripted conversation the suite uses: a tool call, then
// a final text.
const ToolScript = `
- text: I will write the file.
  tool_calls:
    - {name: write, input: {path: hello.js, content: "console.log('Hello, <world> & all!')"}}
- text: Done. It printed Hello, world!
`

// Tools the suite declares.
var Tools = []llm.Tool{
	{Name: "exec", Description: "run a command", InputSchema: []byte(`{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}`)},
	{Name: "write", Description: "write a file", InputSchema: []byte(`{"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}}}`)},
}

// FirstRequest is turn 0 of the suite's conversation.
func FirstRequest() llm.Request {
	return llm.Request{
		Model:     "test-model",
		System:    "You are a careful coding agent.",
		Messages:  []llm.Message{{Role: llm.RoleUser, Text: "Write hello.js and run it."}},
		Tools:     Tools,
		MaxTokens: 1024,
	}
}

// FollowUp appends the assistant answer and a tool result to req.
func FollowUp(req llm.Request, resp llm.Response, result string, isError bool) llm.Request {
	next := req
	next.Messages = append(append([]llm.Message(nil), req.Messages...),
		llm.Message{Role: llm.RoleAssistant, Text: resp.Text, ToolCalls: resp.ToolCalls})
	var results []llm.ToolResult
	for _, c := range resp.ToolCalls {
		results = append(results, llm.ToolResult{ToolCallID: c.ID, Content: result, IsError: isError})
	}
	next.Messages = append(next.Messages, llm.Message{Role: llm.RoleTool, ToolResults: results})
	return next
}

// Generate calls m, streaming when stream is set, and returns the response
// and the deltas seen.
func Generate(t *testing.T, m llm.Model, req llm.Request, stream bool) (llm.Response, []string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var deltas []string
	var onDelta func(llm.Delta)
	if stream {
		onDelta = func(d llm.Delta) { deltas = append(deltas, d.Text) }
	}
	resp, err := m.Generate(ctx, req, onDelta)
	return resp, deltas, err
}

// Normalize makes responses comparable: tool inputs in canonical JSON.
func Normalize(r llm.Response) llm.Response {
	calls := make([]llm.ToolCall, len(r.ToolCalls))
	for i, c := range r.ToolCalls {
		if canon, ok := llm.CanonicalJSON(c.Input); ok {
			c.Input = canon
		}
		calls[i] = c
	}
	if len(calls) == 0 {
		calls = nil
	}
	r.ToolCalls = calls
	return r
}

// APIErr asserts err is an *llm.APIError and returns it.
func APIErr(t *testing.T, err error) *llm.APIError {
	t.Helper()
	var ae *llm.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error = %v (%T), want *llm.APIError", err, err)
	}
	return ae
}

// Run runs the suite.
func Run(t *testing.T, p Provider) {
	script := scripted.MustParse("suite.yaml", ToolScript)
	modes := []struct {
		name   string
		stream bool
	}{{"plain", false}, {"stream", true}}

	t.Run("ToolRoundTrip", func(t *testing.T) {
		for _, mode := range modes {
			t.Run(mode.name, func(t *testing.T) {
				fake := p.Start(script)
				defer fake.Close()
				m := p.New(t, fake.URL)
				req := FirstRequest()
				resp, deltas, err := Generate(t, m, req, mode.stream)
				if err != nil {
					t.Fatal(err)
				}
				want := Normalize(script.Respond(req))
				if got := Normalize(resp); !reflect.DeepEqual(got.ToolCalls, want.ToolCalls) || got.Text != want.Text || got.StopReason != llm.StopToolUse {
					t.Fatalf("turn 0 = %+v, want tool calls %+v and text %q", got, want.ToolCalls, want.Text)
				}
				if mode.stream && strings.Join(deltas, "") != resp.Text {
					t.Fatalf("deltas %q do not add up to the text %q", deltas, resp.Text)
				}
				if resp.Model != "test-model" {
					t.Errorf("model = %q", resp.Model)
				}

				next := FollowUp(req, resp, "rejected by policy: rm -rf / is denied", true)
				resp2, _, err := Generate(t, m, next, mode.stream)
				if err != nil {
					t.Fatal(err)
				}
				if resp2.Text != "Done. It printed Hello, world!" || resp2.StopReason != llm.StopEndTurn || len(resp2.ToolCalls) != 0 {
					t.Fatalf("turn 1 = %+v", resp2)
				}
				recs := fake.Requests()
				if len(recs) != 2 {
					t.Fatalf("fake got %d requests, want 2", len(recs))
				}
				got := recs[1].Request
				if recs[1].Stream != mode.stream {
					t.Errorf("stream flag = %v, want %v", recs[1].Stream, mode.stream)
				}
				if got.System != req.System || len(got.Tools) != len(Tools) || got.Tools[1].Name != "write" {
					t.Errorf("system/tools not sent as given: %+v", got)
				}
				if len(got.Messages) != 3 || got.Messages[1].Role != llm.RoleAssistant || got.Messages[2].Role != llm.RoleTool {
					t.Fatalf("second request messages = %+v", got.Messages)
				}
				if !reflect.DeepEqual(Normalize(llm.Response{ToolCalls: got.Messages[1].ToolCalls}).ToolCalls, want.ToolCalls) {
					t.Errorf("assistant tool calls sent back as %+v, want %+v", got.Messages[1].ToolCalls, want.ToolCalls)
				}
				tr := got.Messages[2].ToolResults
				if len(tr) != 1 || tr[0].ToolCallID != resp.ToolCalls[0].ID || !strings.Contains(tr[0].Content, "rejected by policy: rm -rf / is denied") {
					t.Errorf("tool result sent as %+v", tr)
				}
			})
		}
	})

	t.Run("StreamEqualsPlain", func(t *testing.T) {
		plain, stream := p.Start(script), p.Start(script)
		defer plain.Close()
		defer stream.Close()
		mp, ms := p.New(t, plain.URL), p.New(t, stream.URL)
		req := FirstRequest()
		for turn := range 2 {
			a, _, err := Generate(t, mp, req, false)
			if err != nil {
				t.Fatal(err)
			}
			b, deltas, err := Generate(t, ms, req, true)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(Normalize(a), Normalize(b)) {
				t.Fatalf("turn %d: plain %+v != streamed %+v", turn, a, b)
			}
			if len(deltas) < 2 || strings.Join(deltas, "") != b.Text {
				t.Fatalf("turn %d: deltas %q, text %q", turn, deltas, b.Text)
			}
			req = FollowUp(req, a, "ok", false)
		}
	})

	t.Run("ScriptedUsage", func(t *testing.T) {
		s := scripted.MustParse("usage.yaml", `
- text: hi
  usage: {input_tokens: 10, output_tokens: 5, cache_read_tokens: 100, cache_write_tokens: 7}
`)
		for _, mode := range modes {
			t.Run(mode.name, func(t *testing.T) {
				fake := p.Start(s)
				defer fake.Close()
				resp, _, err := Generate(t, p.New(t, fake.URL), FirstRequest(), mode.stream)
				if err != nil {
					t.Fatal(err)
				}
				want := llm.Usage{InputTokens: 10, OutputTokens: 5, CacheReadTokens: 100, CacheWriteTokens: 7}
				if resp.Usage != want {
					t.Fatalf("usage = %+v, want %+v", resp.Usage, want)
				}
			})
		}
	})

	t.Run("PromptCacheReadOnLaterTurns", func(t *testing.T) {
		long := scripted.MustParse("loop.yaml", `
- tool_calls: [{name: exec, input: {command: ls}}]
- tool_calls: [{name: exec, input: {command: ls -la}}]
- text: done
`)
		fake := p.Start(long)
		defer fake.Close()
		m := p.New(t, fake.URL)
		req := FirstRequest()
		req.System = strings.Repeat("Be careful. ", 400)
		var usages []llm.Usage
		for range 3 {
			resp, _, err := Generate(t, m, req, true)
			if err != nil {
				t.Fatal(err)
			}
			usages = append(usages, resp.Usage)
			if len(resp.ToolCalls) > 0 {
				req = FollowUp(req, resp, strings.Repeat("file.txt\n", 50), false)
			}
		}
		if usages[0].CacheReadTokens != 0 {
			t.Errorf("first turn read %d cached tokens, want 0", usages[0].CacheReadTokens)
		}
		for i := 1; i < 3; i++ {
			u := usages[i]
			if u.CacheReadTokens <= u.InputTokens {
				t.Errorf("turn %d: cache read %d <= uncached input %d; a loop should pay mostly cache reads", i, u.CacheReadTokens, u.InputTokens)
			}
		}
	})

	t.Run("Errors", func(t *testing.T) {
		cases := []struct {
			name       string
			fail       llmfake.Failure
			wantStatus int
			retryable  bool
			retryAfter time.Duration
		}{
			{"429 retry-after", llmfake.Failure{Status: 429, RetryAfter: 7 * time.Second}, 429, true, 7 * time.Second},
			{"429 sub-second retry-after-ms", llmfake.Failure{Status: 429, RetryAfter: 1500 * time.Millisecond}, 429, true, 1500 * time.Millisecond},
			{"500", llmfake.Failure{Status: 500}, 500, true, 0},
			{"503", llmfake.Failure{Status: 503, RetryAfter: 2 * time.Second}, 503, true, 2 * time.Second},
			{"529 overloaded", llmfake.Failure{Status: 529}, 529, true, 0},
			{"408", llmfake.Failure{Status: 408}, 408, true, 0},
			{"400", llmfake.Failure{Status: 400, Message: "messages: bad"}, 400, false, 0},
			{"401", llmfake.Failure{Status: 401}, 401, false, 0},
			{"404 model", llmfake.Failure{Status: 404}, 404, false, 0},
		}
		for _, tc := range cases {
			for _, mode := range modes {
				t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
					fake := p.Start(script)
					defer fake.Close()
					fake.FailNext(1, tc.fail)
					m := p.New(t, fake.URL)
					_, _, err := Generate(t, m, FirstRequest(), mode.stream)
					ae := APIErr(t, err)
					if ae.Status != tc.wantStatus || ae.Retryable != tc.retryable || ae.RetryAfter != tc.retryAfter {
						t.Fatalf("APIError = %+v, want status %d retryable %v retry-after %v", ae, tc.wantStatus, tc.retryable, tc.retryAfter)
					}
					if tc.fail.Message != "" && !strings.Contains(ae.Message, tc.fail.Message) {
						t.Errorf("message %q lacks the provider's %q", ae.Message, tc.fail.Message)
					}
					if n := fake.RequestCount(); n != 1 {
						t.Fatalf("fake got %d requests, want exactly 1 (SDK retries must be off)", n)
					}
					// The failure is consumed: the next attempt succeeds.
					if _, _, err := Generate(t, m, FirstRequest(), mode.stream); err != nil {
						t.Fatalf("retry failed: %v", err)
					}
				})
			}
		}
	})

	t.Run("MidStreamError", func(t *testing.T) {
		fake := p.Start(script)
		defer fake.Close()
		fake.FailNext(1, llmfake.Failure{Status: 529, MidStream: true, Message: "Overloaded"})
		var deltas []string
		_, err := p.New(t, fake.URL).Generate(context.Background(), FirstRequest(), func(d llm.Delta) { deltas = append(deltas, d.Text) })
		ae := APIErr(t, err)
		if !ae.Retryable || !strings.Contains(ae.Message, "Overloaded") {
			t.Fatalf("mid-stream error = %+v, want retryable with the provider message", ae)
		}
	})

	t.Run("ConnectionRefused", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		url := dead.URL
		dead.Close()
		_, _, err := Generate(t, p.New(t, url+"/v1"), FirstRequest(), false)
		ae := APIErr(t, err)
		if ae.Status != 0 || !ae.Retryable {
			t.Fatalf("connection refused = %+v, want status 0 retryable", ae)
		}
	})

	t.Run("ContextCancelled", func(t *testing.T) {
		fake := p.Start(script)
		defer fake.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := p.New(t, fake.URL).Generate(ctx, FirstRequest(), nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		var ae *llm.APIError
		if errors.As(err, &ae) {
			t.Fatalf("a cancelled call must not look like a provider error: %+v", ae)
		}
	})

	t.Run("RateLimit", func(t *testing.T) {
		fake := p.Start(script)
		defer fake.Close()
		clock := newClock()
		fake.SetClock(clock.now)
		fake.SetRateLimit(llmfake.RateLimit{RequestsPerMinute: 2})
		m := p.New(t, fake.URL)
		for i := range 2 {
			if _, _, err := Generate(t, m, FirstRequest(), false); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			clock.advance(10 * time.Second)
		}
		_, _, err := Generate(t, m, FirstRequest(), false)
		ae := APIErr(t, err)
		if ae.Status != 429 || !ae.Retryable || ae.RetryAfter != 40*time.Second {
			t.Fatalf("over the limit: %+v, want 429 retryable after 40s", ae)
		}
		clock.advance(ae.RetryAfter)
		if _, _, err := Generate(t, m, FirstRequest(), false); err != nil {
			t.Fatalf("after waiting Retry-After: %v", err)
		}

		fake.SetRateLimit(llmfake.RateLimit{TokensPerMinute: 1})
		_, _, err = Generate(t, m, FirstRequest(), true)
		if ae := APIErr(t, err); ae.Status != 429 || ae.RetryAfter <= 0 {
			t.Fatalf("over the token limit: %+v", ae)
		}
	})
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
