package llmfake

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/scripted"
)

var script = scripted.MustParse("s.yaml", `
- tool_calls: [{name: exec, input: {command: ls}}]
- text: done
`)

func post(t *testing.T, url string, header map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

var anthropicAuth = map[string]string{"X-Api-Key": "k", "Anthropic-Version": "2023-06-01"}
var openaiAuth = map[string]string{"Authorization": "Bearer k"}

func TestAnthropicRejectsWhatTheAPIRejects(t *testing.T) {
	s := NewAnthropic(script)
	defer s.Close()
	url := s.URL + anthropicMessagesPath
	toolUse := `{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"exec","input":{}}]}`
	cc := `"cache_control":{"type":"ephemeral"}`
	cases := []struct {
		name, body string
		header     map[string]string
		status     int
		want       string
	}{
		{"no key", `{}`, nil, 401, "authentication_error"},
		{"bad json", `{`, anthropicAuth, 400, "invalid_request_error"},
		{"no max_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, anthropicAuth, 400, "max_tokens"},
		{"empty text", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"  "}]}`, anthropicAuth, 400, "non-whitespace"},
		{"unanswered tool_use", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"},` + toolUse + `,{"role":"user","content":"next"}]}`, anthropicAuth, 400, "without `tool_result`"},
		{"unknown tool_result", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"zz","content":"x"}]}]}`, anthropicAuth, 400, "unexpected `tool_use_id`"},
		{"tool_use input not object", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"exec","input":"x"}]}]}`, anthropicAuth, 400, "valid dictionary"},
		{"five cache markers", `{"model":"m","max_tokens":5,"system":[{"type":"text","text":"a",` + cc + `},{"type":"text","text":"b",` + cc + `},{"type":"text","text":"c",` + cc + `},{"type":"text","text":"d",` + cc + `}],"messages":[{"role":"user","content":[{"type":"text","text":"hi",` + cc + `}]}]}`, anthropicAuth, 400, "maximum of 4"},
		{"ok", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, anthropicAuth, 200, `"tool_use"`},
	}
	for _, tc := range cases {
		status, _, body := post(t, url, tc.header, tc.body)
		if status != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want %d containing %q", tc.name, status, body, tc.status, tc.want)
		}
	}
	if status, _, _ := post(t, s.URL+"/v1/complete", anthropicAuth, `{}`); status != 404 {
		t.Errorf("unknown path: %d", status)
	}
	recs := s.Requests()
	if len(recs) != len(cases)+1 || recs[0].Status != 401 || recs[len(cases)-1].Status != 200 {
		t.Fatalf("recorded %d requests: %+v", len(recs), recs)
	}
}

func TestOpenAIRejectsWhatTheAPIRejects(t *testing.T) {
	s := NewOpenAI(script)
	defer s.Close()
	url := s.URL + "/chat/completions"
	asst := `{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"exec","arguments":"{}"}}]}`
	cases := []struct {
		name, body string
		header     map[string]string
		status     int
		want       string
	}{
		{"no key", `{}`, nil, 401, "invalid_api_key"},
		{"no model", `{"messages":[{"role":"user","content":"hi"}]}`, openaiAuth, 400, "model"},
		{"unanswered call", `{"model":"m","messages":[{"role":"user","content":"hi"},` + asst + `,{"role":"user","content":"x"}]}`, openaiAuth, 400, "did not have response messages: c1"},
		{"stray tool message", `{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"zz","content":"x"}]}`, openaiAuth, 400, "preceeding message with 'tool_calls'"},
		{"ok", `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"hi"}]},` + asst + `,{"role":"tool","tool_call_id":"c1","content":"ok"}]}`, openaiAuth, 200, `"content":"done"`},
	}
	for _, tc := range cases {
		status, _, body := post(t, url, tc.header, tc.body)
		if status != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want %d containing %q", tc.name, status, body, tc.status, tc.want)
		}
	}
	last, _ := s.Last()
	want := llm.Request{Model: "m", System: "s", Messages: []llm.Message{
		{Role: llm.RoleUser, Text: "hi"},
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "c1", Name: "exec", Input: json.RawMessage("{}")}}},
		{Role: llm.RoleTool, ToolResults: []llm.ToolResult{{ToolCallID: "c1", Content: "ok"}}},
	}}
	if llm.RequestDigest(last.Request) != llm.RequestDigest(want) {
		t.Fatalf("decoded %+v\nwant %+v", last.Request, want)
	}
}

func TestStreamWireFormat(t *testing.T) {
	a := NewAnthropic(script)
	defer a.Close()
	_, h, body := post(t, a.URL+anthropicMessagesPath, anthropicAuth, `{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	order := []string{"event: message_start", "event: ping", "event: content_block_start", `"type":"input_json_delta"`, "event: content_block_stop", `"stop_reason":"tool_use"`, "event: message_stop"}
	checkOrder(t, body, order)
	if h.Get("Content-Type") != "text/event-stream" {
		t.Errorf("content type %q", h.Get("Content-Type"))
	}

	o := NewOpenAI(script)
	defer o.Close()
	_, _, body = post(t, o.URL+"/chat/completions", openaiAuth, `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
	if !strings.Contains(body, `"object":"chat.completion.chunk"`) {
		t.Errorf("no chunk objects: %s", body)
	}
	checkOrder(t, body, []string{`"role":"assistant"`, `"tool_calls":[{"function":{"arguments":"","name":"exec"},"id":"call_0_0"`, `"finish_reason":"tool_calls"`, `"choices":[]`, `"prompt_tokens"`, "data: [DONE]"})
}

func checkOrder(t *testing.T, body string, parts []string) {
	t.Helper()
	rest := body
	for _, p := range parts {
		i := strings.Index(rest, p)
		if i < 0 {
			t.Fatalf("%q missing or out of order in stream:\n%s", p, body)
		}
		rest = rest[i+len(p):]
	}
}

func TestRateLimitHeadersAndRecording(t *testing.T) {
	s := NewAnthropic(script)
	defer s.Close()
	s.SetRateLimit(RateLimit{RequestsPerMinute: 1, TokensPerMinute: 100000})
	body := `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	status, h, _ := post(t, s.URL+anthropicMessagesPath, anthropicAuth, body)
	if status != 200 || h.Get("Anthropic-Ratelimit-Requests-Remaining") != "0" || h.Get("Anthropic-Ratelimit-Tokens-Limit") != "100000" {
		t.Fatalf("first: %d %v", status, h)
	}
	status, h, resp := post(t, s.URL+anthropicMessagesPath, anthropicAuth, body)
	if status != 429 || h.Get("Retry-After") == "" || !strings.Contains(resp, "rate_limit_error") {
		t.Fatalf("second: %d %v %s", status, h, resp)
	}
	if n := s.RequestCount(); n != 2 {
		t.Fatalf("count %d", n)
	}
	if recs := s.Requests(); !bytes.Equal(recs[1].Body, []byte(body)) || recs[1].Status != 429 {
		t.Fatalf("recorded %+v", recs[1])
	}
}

func TestPrefixCache(t *testing.T) {
	var c prefixCache
	segs := []segment{{data: []byte("tools")}, {data: []byte("system"), breakpoint: true}, {data: []byte("m1"), breakpoint: true}}
	u := c.use(segs, false)
	if u.CacheReadTokens != 0 || u.CacheWriteTokens != 5 || u.InputTokens != 0 {
		t.Fatalf("first: %+v", u)
	}
	// The next turn moves the last breakpoint; the old prefix is read.
	segs[2].breakpoint = false
	segs = append(segs, segment{data: []byte("m2-longer-text"), breakpoint: true}, segment{data: []byte("tail")})
	u = c.use(segs, false)
	if u.CacheReadTokens != 5 || u.CacheWriteTokens != 4 || u.InputTokens != 1 {
		t.Fatalf("second: %+v", u)
	}
	// No breakpoints: no caching at all.
	var none prefixCache
	plain := []segment{{data: []byte("a")}, {data: []byte("b")}}
	none.use(plain, false)
	if u := none.use(plain, false); u.CacheReadTokens != 0 || u.CacheWriteTokens != 0 {
		t.Fatalf("no breakpoints: %+v", u)
	}
	// Automatic (OpenAI): every prefix is cached, nothing is reported written.
	var auto prefixCache
	auto.use(plain, true)
	if u := auto.use(plain, true); u.CacheReadTokens != 2 || u.CacheWriteTokens != 0 || u.InputTokens != 0 {
		t.Fatalf("automatic: %+v", u)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","max_tokens":5,"system":"s","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"text","text":"x"},{"type":"tool_use","id":"t","name":"n","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"r"}],"is_error":true}]}],"tools":[{"name":"n","input_schema":{}}]}`,
		`{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"n","arguments":"{"}}]},{"role":"tool","tool_call_id":"c","content":"x"}],"tools":[{"type":"function","function":{"name":"n"}}]}`,
		`{}`, `[]`, `{"messages":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, fl := range []flavor{anthropicFlavor{}, openaiFlavor{}} {
			d, err := fl.decode(body)
			if err != nil {
				continue
			}
			// Whatever decodes can be answered and cached.
			_ = script.Respond(d.req)
			_ = fl.cacheUsage(&prefixCache{}, d)
			for i, m := range d.req.Messages {
				if m.Role == llm.RoleTool && len(m.ToolResults) == 0 {
					t.Fatalf("%s: tool message %d without results", fl.name(), i)
				}
			}
		}
	})
}
