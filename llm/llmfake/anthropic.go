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

// Anthropic limits the fake enforces.
const (
	anthropicMaxCacheBreakpoints = 4
	anthropicMessagesPath        = "/v1/messages"
)

type anthropicFlavor struct{}

// Wire shapes of the Anthropic Messages API (the parts the fake reads).
type aRequest struct {
	Model       string          `json:"model"`
	MaxTokens   int             `json:"max_tokens"`
	System      json.RawMessage `json:"system"`
	Messages    []aMessage      `json:"messages"`
	Tools       []aTool         `json:"tools"`
	Stream      bool            `json:"stream"`
	Temperature *float64        `json:"temperature"`
}

type aMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type aCacheControl struct {
	Type string `json:"type"`
	TTL  string `json:"ttl,omitempty"`
}

type aBlock struct {
	Type         string          `json:"type"`
	Text         string          `json:"text,omitempty"`
	ID           string          `json:"id,omitempty"`
	Name         string          `json:"name,omitempty"`
	Input        json.RawMessage `json:"input,omitempty"`
	ToolUseID    string          `json:"tool_use_id,omitempty"`
	Content      json.RawMessage `json:"content,omitempty"`
	IsError      bool            `json:"is_error,omitempty"`
	CacheControl *aCacheControl  `json:"cache_control,omitempty"`
}

type aTool struct {
	Name         string          `json:"name"`
	Description  string          `json:"description,omitempty"`
	InputSchema  json.RawMessage `json:"input_schema"`
	CacheControl *aCacheControl  `json:"cache_control,omitempty"`
}

func (anthropicFlavor) name() string { return "Anthropic" }

func (anthropicFlavor) route(method, path string) bool {
	return method == http.MethodPost && path == anthropicMessagesPath
}

func (anthropicFlavor) authorized(h http.Header) bool {
	return h.Get("X-Api-Key") != "" || strings.HasPrefix(h.Get("Authorization"), "Bearer ")
}

// blocks parses message or system content: a string or a list of blocks.
func blocks(raw json.RawMessage, where string) ([]aBlock, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return []aBlock{{Type: "text", Text: s}}, nil
	}
	var bs []aBlock
	if err := json.Unmarshal(raw, &bs); err != nil {
		return nil, fmt.Errorf("%s: content must be a string or a list of content blocks", where)
	}
	return bs, nil
}

func (anthropicFlavor) decode(body []byte) (decoded, error) {
	var ar aRequest
	if err := json.Unmarshal(body, &ar); err != nil {
		return decoded{}, fmt.Errorf("request body is not valid JSON: %v", err)
	}
	if ar.Model == "" {
		return decoded{}, errors.New("model: Field required")
	}
	if ar.MaxTokens <= 0 {
		return decoded{}, errors.New("max_tokens: Field required (a positive integer)")
	}
	if len(ar.Messages) == 0 {
		return decoded{}, errors.New("messages: at least one message is required")
	}
	d := decoded{stream: ar.Stream}
	req := &d.req
	req.Model, req.MaxTokens, req.Temperature = ar.Model, ar.MaxTokens, ar.Temperature
	breakpoints := 0
	mark := func(cc *aCacheControl) bool {
		if cc != nil {
			breakpoints++
		}
		return cc != nil
	}

	for i, t := range ar.Tools {
		if t.Name == "" {
			return decoded{}, fmt.Errorf("tools.%d.name: Field required", i)
		}
		req.Tools = append(req.Tools, llm.Tool{Name: t.Name, Description: t.Description, InputSchema: t.InputSchema})
		bp := mark(t.CacheControl)
		t.CacheControl = nil
		d.segments = append(d.segments, segment{data: mustJSON(t), breakpoint: bp})
	}
	if len(ar.System) > 0 && string(ar.System) != "null" {
		sys, err := blocks(ar.System, "system")
		if err != nil {
			return decoded{}, err
		}
		var texts []string
		for i, b := range sys {
			if b.Type != "text" || strings.TrimSpace(b.Text) == "" {
				return decoded{}, fmt.Errorf("system.%d: system blocks must be non-empty text blocks", i)
			}
			texts = append(texts, b.Text)
			bp := mark(b.CacheControl)
			b.CacheControl = nil
			d.segments = append(d.segments, segment{data: mustJSON(b), breakpoint: bp})
		}
		req.System = strings.Join(texts, "\n")
	}

	var pendingToolUses []string // tool_use ids the next message must answer
	for i, m := range ar.Messages {
		where := fmt.Sprintf("messages.%d", i)
		bs, err := blocks(m.Content, where)
		if err != nil {
			return decoded{}, err
		}
		if len(bs) == 0 {
			return decoded{}, fmt.Errorf("%s: all messages must have non-empty content", where)
		}
		var msg llm.Message
		var texts []string
		var answered []string
		var uses []string
		for j, b := range bs {
			at := fmt.Sprintf("%s.content.%d", where, j)
			bp := mark(b.CacheControl)
			b.CacheControl = nil
			data := mustJSON(b)
			if j == 0 {
				data = append([]byte(m.Role+":"), data...)
			}
			d.segments = append(d.segments, segment{data: data, breakpoint: bp})
			switch b.Type {
			case "text":
				if strings.TrimSpace(b.Text) == "" {
					return decoded{}, fmt.Errorf("%s: text content blocks must contain non-whitespace text", at)
				}
				texts = append(texts, b.Text)
			case "tool_use":
				if m.Role != llm.RoleAssistant {
					return decoded{}, fmt.Errorf("%s: tool_use blocks are only allowed in assistant messages", at)
				}
				if b.ID == "" || b.Name == "" {
					return decoded{}, fmt.Errorf("%s: tool_use needs an id and a name", at)
				}
				var obj map[string]json.RawMessage
				if json.Unmarshal(b.Input, &obj) != nil || obj == nil {
					return decoded{}, fmt.Errorf("%s.input: Input should be a valid dictionary", at)
				}
				uses = append(uses, b.ID)
				msg.ToolCalls = append(msg.ToolCalls, llm.ToolCall{ID: b.ID, Name: b.Name, Input: b.Input})
			case "tool_result":
				if m.Role != llm.RoleUser {
					return decoded{}, fmt.Errorf("%s: tool_result blocks are only allowed in user messages", at)
				}
				if !contains(pendingToolUses, b.ToolUseID) {
					return decoded{}, fmt.Errorf("%s: unexpected `tool_use_id` found in `tool_result` blocks: %s. "+
						"Each `tool_result` block must have a corresponding `tool_use` block in the previous message.", at, b.ToolUseID)
				}
				content, err := toolResultText(b.Content, at)
				if err != nil {
					return decoded{}, err
				}
				answered = append(answered, b.ToolUseID)
				msg.ToolResults = append(msg.ToolResults, llm.ToolResult{ToolCallID: b.ToolUseID, Content: content, IsError: b.IsError})
			default:
				return decoded{}, fmt.Errorf("%s: the fake does not support content blocks of type %q", at, b.Type)
			}
		}
		if missing := without(pendingToolUses, answered); len(missing) > 0 {
			return decoded{}, fmt.Errorf("messages.%d: `tool_use` ids were found without `tool_result` blocks immediately after: %s. "+
				"Each `tool_use` block must have a corresponding `tool_result` block in the next message.", i-1, strings.Join(missing, ", "))
		}
		pendingToolUses = uses
		msg.Text = strings.Join(texts, "")
		switch {
		case m.Role == llm.RoleAssistant:
			msg.Role = llm.RoleAssistant
		case m.Role == llm.RoleUser && len(msg.ToolResults) > 0:
			msg.Role = llm.RoleTool
		case m.Role == llm.RoleUser:
			msg.Role = llm.RoleUser
		default:
			return decoded{}, fmt.Errorf("%s.role: Input should be 'user' or 'assistant'", where)
		}
		req.Messages = append(req.Messages, msg)
	}
	if len(pendingToolUses) > 0 {
		return decoded{}, fmt.Errorf("messages.%d: `tool_use` ids were found without `tool_result` blocks immediately after: %s",
			len(ar.Messages)-1, strings.Join(pendingToolUses, ", "))
	}
	if breakpoints > anthropicMaxCacheBreakpoints {
		return decoded{}, fmt.Errorf("A maximum of %d blocks with cache_control may be provided. Found %d.",
			anthropicMaxCacheBreakpoints, breakpoints)
	}
	return d, nil
}

// toolResultText reads tool_result content: a string or a list of text blocks.
func toolResultText(raw json.RawMessage, at string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	bs, err := blocks(raw, at+".content")
	if err != nil {
		return "", err
	}
	var texts []string
	for _, b := range bs {
		if b.Type != "text" {
			return "", fmt.Errorf("%s.content: the fake supports only text in tool results, got %q", at, b.Type)
		}
		texts = append(texts, b.Text)
	}
	return strings.Join(texts, ""), nil
}

func (anthropicFlavor) cacheUsage(c *prefixCache, d decoded) llm.Usage {
	return c.use(d.segments, false)
}

// anthropicErrorType is the error.type Anthropic documents for a status.
func anthropicErrorType(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_request_error"
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case llm.StatusOverloaded:
		return "overloaded_error"
	}
	return "api_error"
}

func anthropicErrorBody(status int, msg string) map[string]any {
	return map[string]any{
		"type":  "error",
		"error": map[string]any{"type": anthropicErrorType(status), "message": msg},
	}
}

func (anthropicFlavor) writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Request-Id", "req_fake")
	writeJSON(w, status, anthropicErrorBody(status, msg))
}

// anthropicStop maps a normalised stop reason to the wire value.
func anthropicStop(s string) string {
	switch s {
	case llm.StopEndTurn, llm.StopToolUse, llm.StopMaxTokens:
		return s
	}
	return "stop_sequence"
}

func anthropicUsage(u llm.Usage) map[string]any {
	return map[string]any{
		"input_tokens":                u.InputTokens,
		"output_tokens":               u.OutputTokens,
		"cache_read_input_tokens":     u.CacheReadTokens,
		"cache_creation_input_tokens": u.CacheWriteTokens,
	}
}

func anthropicContent(resp llm.Response) []map[string]any {
	content := []map[string]any{}
	if resp.Text != "" {
		content = append(content, map[string]any{"type": "text", "text": resp.Text})
	}
	for _, c := range resp.ToolCalls {
		content = append(content, map[string]any{"type": "tool_use", "id": c.ID, "name": c.Name, "input": c.Input})
	}
	return content
}

func anthropicMessage(resp llm.Response, id string, content []map[string]any, stop any, usage map[string]any) map[string]any {
	return map[string]any{
		"id": "msg_fake_" + id, "type": "message", "role": "assistant", "model": resp.Model,
		"content": content, "stop_reason": stop, "stop_sequence": nil, "usage": usage,
	}
}

func (anthropicFlavor) writeResponse(w http.ResponseWriter, d decoded, resp llm.Response, id string) {
	if !d.stream {
		w.Header().Set("Request-Id", "req_fake_"+id)
		writeJSON(w, http.StatusOK, anthropicMessage(resp, id, anthropicContent(resp), anthropicStop(resp.StopReason), anthropicUsage(resp.Usage)))
		return
	}
	sse := startSSE(w)
	anthropicStreamStart(sse, resp, id)
	index := 0
	if resp.Text != "" {
		sse.event("content_block_start", map[string]any{"type": "content_block_start", "index": index,
			"content_block": map[string]any{"type": "text", "text": ""}})
		for _, word := range scripted.Words(resp.Text) {
			sse.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": index,
				"delta": map[string]any{"type": "text_delta", "text": word}})
		}
		sse.event("content_block_stop", map[string]any{"type": "content_block_stop", "index": index})
		index++
	}
	for _, c := range resp.ToolCalls {
		sse.event("content_block_start", map[string]any{"type": "content_block_start", "index": index,
			"content_block": map[string]any{"type": "tool_use", "id": c.ID, "name": c.Name, "input": map[string]any{}}})
		for _, part := range jsonPieces(c.Input) {
			sse.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": index,
				"delta": map[string]any{"type": "input_json_delta", "partial_json": part}})
		}
		sse.event("content_block_stop", map[string]any{"type": "content_block_stop", "index": index})
		index++
	}
	sse.event("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": anthropicStop(resp.StopReason), "stop_sequence": nil},
		"usage": map[string]any{"output_tokens": resp.Usage.OutputTokens}})
	sse.event("message_stop", map[string]any{"type": "message_stop"})
}

// anthropicStreamStart writes message_start (with input usage, as Anthropic
// does) and a ping.
func anthropicStreamStart(sse *sseWriter, resp llm.Response, id string) {
	u := resp.Usage
	u.OutputTokens = 1
	sse.event("message_start", map[string]any{"type": "message_start",
		"message": anthropicMessage(resp, id, []map[string]any{}, nil, anthropicUsage(u))})
	sse.event("ping", map[string]any{"type": "ping"})
}

func (anthropicFlavor) writeMidStreamError(w http.ResponseWriter, d decoded, status int, msg, id string) {
	sse := startSSE(w)
	anthropicStreamStart(sse, llm.Response{Model: d.req.Model}, id)
	sse.event("error", anthropicErrorBody(status, msg))
}

func (anthropicFlavor) rateLimitHeaders(h http.Header, lim RateLimit, st rateState, now time.Time) {
	reset := st.reset.UTC().Format(time.RFC3339)
	if lim.RequestsPerMinute > 0 {
		h.Set("Anthropic-Ratelimit-Requests-Limit", fmt.Sprint(lim.RequestsPerMinute))
		h.Set("Anthropic-Ratelimit-Requests-Remaining", fmt.Sprint(max(0, lim.RequestsPerMinute-st.requests)))
		h.Set("Anthropic-Ratelimit-Requests-Reset", reset)
	}
	if lim.TokensPerMinute > 0 {
		h.Set("Anthropic-Ratelimit-Tokens-Limit", fmt.Sprint(lim.TokensPerMinute))
		h.Set("Anthropic-Ratelimit-Tokens-Remaining", fmt.Sprint(max(0, lim.TokensPerMinute-st.tokens)))
		h.Set("Anthropic-Ratelimit-Tokens-Reset", reset)
	}
}
