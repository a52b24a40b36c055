package llmfake

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/scripted"
)

const openaiCompletionsPath = "/v1/chat/completions"

type openaiFlavor struct{}

// Wire shapes of the OpenAI Chat Completions API (the parts the fake reads).
type oRequest struct {
	Model               string      `json:"model"`
	Messages            []oMessage  `json:"messages"`
	Tools               []oTool     `json:"tools"`
	Stream              bool        `json:"stream"`
	StreamOptions       *oStreamOpt `json:"stream_options"`
	MaxTokens           *int        `json:"max_tokens"`
	MaxCompletionTokens *int        `json:"max_completion_tokens"`
	Temperature         *float64    `json:"temperature"`
}

type oStreamOpt struct {
	IncludeUsage bool `json:"include_usage"`
}

type oMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content,omitempty"`
	ToolCalls  []oToolCall     `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

type oToolCall struct {
	ID       string        `json:"id"`
	Type     string        `json:"type"`
	Function oFunctionCall `json:"function"`
}

type oFunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type oTool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
	} `json:"function"`
}

func (openaiFlavor) name() string { return "OpenAI" }

func (openaiFlavor) route(method, path string) bool {
	return method == http.MethodPost && path == openaiCompletionsPath
}

func (openaiFlavor) authorized(h http.Header) bool {
	return strings.TrimSpace(strings.TrimPrefix(h.Get("Authorization"), "Bearer ")) != "" &&
		strings.HasPrefix(h.Get("Authorization"), "Bearer ")
}

// openaiText reads message content: a string, null, or a list of text parts.
func openaiText(raw json.RawMessage, where string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("%s.content: must be a string or a list of content parts", where)
	}
	var texts []string
	for i, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("%s.content.%d: the fake supports only text parts, got %q", where, i, p.Type)
		}
		texts = append(texts, p.Text)
	}
	return strings.Join(texts, ""), nil
}

func (openaiFlavor) decode(body []byte) (decoded, error) {
	var or oRequest
	if err := json.Unmarshal(body, &or); err != nil {
		return decoded{}, fmt.Errorf("We could not parse the JSON body of your request: %v", err)
	}
	if or.Model == "" {
		return decoded{}, errors.New("you must provide a model parameter")
	}
	if len(or.Messages) == 0 {
		return decoded{}, errors.New("'messages' must contain at least one message")
	}
	d := decoded{stream: or.Stream}
	req := &d.req
	req.Model, req.Temperature = or.Model, or.Temperature
	switch {
	case or.MaxCompletionTokens != nil:
		req.MaxTokens = *or.MaxCompletionTokens
	case or.MaxTokens != nil:
		req.MaxTokens = *or.MaxTokens
	}
	for i, t := range or.Tools {
		if t.Type != "function" || t.Function.Name == "" {
			return decoded{}, fmt.Errorf("tools[%d]: expected a function tool with a name", i)
		}
		req.Tools = append(req.Tools, llm.Tool{Name: t.Function.Name, Description: t.Function.Description, InputSchema: t.Function.Parameters})
		d.segments = append(d.segments, segment{data: mustJSON(t)})
	}
	var systems []string
	var pending []string // tool_call ids still to be answered
	lastAssistant := -1
	for i, m := range or.Messages {
		where := fmt.Sprintf("messages[%d]", i)
		d.segments = append(d.segments, segment{data: mustJSON(m)})
		text, err := openaiText(m.Content, where)
		if err != nil {
			return decoded{}, err
		}
		if m.Role != "tool" && len(pending) > 0 {
			return decoded{}, fmt.Errorf("An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "+
				"The following tool_call_ids did not have response messages: %s (messages[%d])", strings.Join(pending, ", "), lastAssistant)
		}
		switch m.Role {
		case "system", "developer":
			systems = append(systems, text)
		case "user":
			req.Messages = append(req.Messages, llm.Message{Role: llm.RoleUser, Text: text})
		case "assistant":
			if text == "" && len(m.ToolCalls) == 0 {
				return decoded{}, fmt.Errorf("%s: an assistant message needs content or tool_calls", where)
			}
			msg := llm.Message{Role: llm.RoleAssistant, Text: text}
			for j, c := range m.ToolCalls {
				if c.ID == "" || c.Type != "function" || c.Function.Name == "" {
					return decoded{}, fmt.Errorf("%s.tool_calls[%d]: expected {id, type: function, function: {name, arguments}}", where, j)
				}
				msg.ToolCalls = append(msg.ToolCalls, llm.ToolCall{ID: c.ID, Name: c.Function.Name, Input: json.RawMessage(c.Function.Arguments)})
				pending = append(pending, c.ID)
			}
			lastAssistant = i
			req.Messages = append(req.Messages, msg)
		case "tool":
			if !contains(pending, m.ToolCallID) {
				return decoded{}, fmt.Errorf("Invalid parameter: %s: messages with role 'tool' must be a response to a preceeding message with 'tool_calls' (tool_call_id %q)", where, m.ToolCallID)
			}
			pending = without(pending, []string{m.ToolCallID})
			res := llm.ToolResult{ToolCallID: m.ToolCallID, Content: text}
			if n := len(req.Messages); n > 0 && req.Messages[n-1].Role == llm.RoleTool {
				req.Messages[n-1].ToolResults = append(req.Messages[n-1].ToolResults, res)
			} else {
				req.Messages = append(req.Messages, llm.Message{Role: llm.RoleTool, ToolResults: []llm.ToolResult{res}})
			}
		default:
			return decoded{}, fmt.Errorf("%s.role: invalid role %q", where, m.Role)
		}
	}
	if len(pending) > 0 {
		return decoded{}, fmt.Errorf("An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "+
			"The following tool_call_ids did not have response messages: %s", strings.Join(pending, ", "))
	}
	req.System = strings.Join(systems, "\n")
	if or.StreamOptions != nil && or.StreamOptions.IncludeUsage {
		d.includeUsage = true
	}
	return d, nil
}

func (openaiFlavor) cacheUsage(c *prefixCache, d decoded) llm.Usage {
	return c.use(d.segments, true)
}

func openaiErrorType(status int) (typ, code string) {
	switch status {
	case http.StatusUnauthorized:
		return "invalid_request_error", "invalid_api_key"
	case http.StatusNotFound:
		return "invalid_request_error", "model_not_found"
	case http.StatusTooManyRequests:
		return "requests", "rate_limit_exceeded"
	}
	if status >= 500 {
		return "server_error", ""
	}
	return "invalid_request_error", ""
}

func openaiErrorBody(status int, msg string) map[string]any {
	typ, code := openaiErrorType(status)
	var c any
	if code != "" {
		c = code
	}
	return map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": c}}
}

func (openaiFlavor) writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("X-Request-Id", "req_fake")
	writeJSON(w, status, openaiErrorBody(status, msg))
}

// openaiFinish maps a normalised stop reason to finish_reason.
func openaiFinish(s string) string {
	switch s {
	case llm.StopEndTurn:
		return "stop"
	case llm.StopToolUse:
		return "tool_calls"
	case llm.StopMaxTokens:
		return "length"
	}
	return "content_filter"
}

// openaiUsage renders usage: prompt_tokens includes cached tokens.
func openaiUsage(u llm.Usage) map[string]any {
	prompt := u.InputTokens + u.CacheReadTokens + u.CacheWriteTokens
	return map[string]any{
		"prompt_tokens":     prompt,
		"completion_tokens": u.OutputTokens,
		"total_tokens":      prompt + u.OutputTokens,
		"prompt_tokens_details": map[string]any{
			"cached_tokens": u.CacheReadTokens, "cache_write_tokens": u.CacheWriteTokens, "audio_tokens": 0,
		},
		"completion_tokens_details": map[string]any{"reasoning_tokens": 0, "audio_tokens": 0},
	}
}

func openaiToolCalls(resp llm.Response) []map[string]any {
	var calls []map[string]any
	for _, c := range resp.ToolCalls {
		calls = append(calls, map[string]any{"id": c.ID, "type": "function",
			"function": map[string]any{"name": c.Name, "arguments": string(c.Input)}})
	}
	return calls
}

func openaiEnvelope(object, id, model string, choices []map[string]any) map[string]any {
	return map[string]any{"id": "chatcmpl-fake-" + id, "object": object, "created": time.Now().Unix(),
		"model": model, "system_fingerprint": "fp_fake", "choices": choices}
}

func (openaiFlavor) writeResponse(w http.ResponseWriter, d decoded, resp llm.Response, id string) {
	if !d.stream {
		msg := map[string]any{"role": "assistant", "content": nil, "refusal": nil}
		if resp.Text != "" {
			msg["content"] = resp.Text
		}
		if calls := openaiToolCalls(resp); calls != nil {
			msg["tool_calls"] = calls
		}
		body := openaiEnvelope("chat.completion", id, resp.Model, []map[string]any{
			{"index": 0, "message": msg, "logprobs": nil, "finish_reason": openaiFinish(resp.StopReason)}})
		body["usage"] = openaiUsage(resp.Usage)
		w.Header().Set("X-Request-Id", "req_fake_"+id)
		writeJSON(w, http.StatusOK, body)
		return
	}
	sse := startSSE(w)
	chunk := func(delta map[string]any, finish any) {
		c := openaiEnvelope("chat.completion.chunk", id, resp.Model, []map[string]any{
			{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}})
		if d.includeUsage {
			c["usage"] = nil
		}
		sse.event("", c)
	}
	chunk(map[string]any{"role": "assistant", "content": "", "refusal": nil}, nil)
	for _, word := range scripted.Words(resp.Text) {
		chunk(map[string]any{"content": word}, nil)
	}
	for i, c := range resp.ToolCalls {
		chunk(map[string]any{"tool_calls": []map[string]any{{"index": i, "id": c.ID, "type": "function",
			"function": map[string]any{"name": c.Name, "arguments": ""}}}}, nil)
		for _, part := range jsonPieces(c.Input) {
			chunk(map[string]any{"tool_calls": []map[string]any{{"index": i, "function": map[string]any{"arguments": part}}}}, nil)
		}
	}
	chunk(map[string]any{}, openaiFinish(resp.StopReason))
	if d.includeUsage {
		u := openaiEnvelope("chat.completion.chunk", id, resp.Model, []map[string]any{})
		u["usage"] = openaiUsage(resp.Usage)
		sse.event("", u)
	}
	sse.raw("", "[DONE]")
}

func (openaiFlavor) writeMidStreamError(w http.ResponseWriter, d decoded, status int, msg, id string) {
	sse := startSSE(w)
	sse.event("", openaiEnvelope("chat.completion.chunk", id, d.req.Model, []map[string]any{
		{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}, "logprobs": nil, "finish_reason": nil}}))
	sse.event("", openaiErrorBody(status, msg))
}

func (openaiFlavor) rateLimitHeaders(h http.Header, lim RateLimit, st rateState, now time.Time) {
	reset := max(st.reset.Sub(now), 0).Round(time.Millisecond).String()
	if lim.RequestsPerMinute > 0 {
		h.Set("X-Ratelimit-Limit-Requests", fmt.Sprint(lim.RequestsPerMinute))
		h.Set("X-Ratelimit-Remaining-Requests", fmt.Sprint(max(0, lim.RequestsPerMinute-st.requests)))
		h.Set("X-Ratelimit-Reset-Requests", reset)
	}
	if lim.TokensPerMinute > 0 {
		h.Set("X-Ratelimit-Limit-Tokens", fmt.Sprint(lim.TokensPerMinute))
		h.Set("X-Ratelimit-Remaining-Tokens", fmt.Sprint(max(0, lim.TokensPerMinute-st.tokens)))
		h.Set("X-Ratelimit-Reset-Tokens", reset)
	}
}
