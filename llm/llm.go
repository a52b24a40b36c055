// Package llm is the provider-neutral view of a chat model with tools:
// one Generate call = one LLM turn. Providers (anthropic, openai, scripted)
// translate to and from their wire formats; the durable agent loop records
// each call as one step, so nothing here needs to be idempotent.
package llm

import (
	"context"
	"encoding/json"
	"time"

	"github.com/polos-run/polos/perr"
)

// Roles of a message in the conversation.
const (
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool" // carries ToolResults answering the previous assistant ToolCalls
)

// Stop reasons, normalised across providers.
const (
	StopEndTurn   = "end_turn"
	StopToolUse   = "tool_use"
	StopMaxTokens = "max_tokens"
	StopOther     = "other"
)

// Message is one entry of the conversation. An assistant message may hold
// Text and ToolCalls; a tool message holds ToolResults.
type Message struct {
	Role        string       `json:"role" msgpack:"role"`
	Text        string       `json:"text,omitempty" msgpack:"text,omitempty"`
	ToolCalls   []ToolCall   `json:"tool_calls,omitempty" msgpack:"tool_calls,omitempty"`
	ToolResults []ToolResult `json:"tool_results,omitempty" msgpack:"tool_results,omitempty"`
}

// ToolCall is the model asking to run a tool. Input is the raw JSON the
// model produced; it may be malformed, and the agent loop answers that with
// an error ToolResult rather than failing.
type ToolCall struct {
	ID    string          `json:"id" msgpack:"id"`
	Name  string          `json:"name" msgpack:"name"`
	Input json.RawMessage `json:"input" msgpack:"input"`
}

// ToolResult answers one ToolCall by ID.
type ToolResult struct {
	ToolCallID string `json:"tool_call_id" msgpack:"tool_call_id"`
	Content    string `json:"content" msgpack:"content"`
	IsError    bool   `json:"is_error,omitempty" msgpack:"is_error,omitempty"`
}

// Tool describes a tool the model may call; InputSchema is a JSON Schema object.
type Tool struct {
	Name        string          `json:"name" msgpack:"name"`
	Description string          `json:"description" msgpack:"description"`
	InputSchema json.RawMessage `json:"input_schema" msgpack:"input_schema"`
}

// Request is one LLM turn.
type Request struct {
	Model       string    `json:"model" msgpack:"model"`
	System      string    `json:"system,omitempty" msgpack:"system,omitempty"`
	Messages    []Message `json:"messages" msgpack:"messages"`
	Tools       []Tool    `json:"tools,omitempty" msgpack:"tools,omitempty"`
	MaxTokens   int       `json:"max_tokens,omitempty" msgpack:"max_tokens,omitempty"`
	Temperature *float64  `json:"temperature,omitempty" msgpack:"temperature,omitempty"`
}

// Usage counts tokens as the provider reported them, in one convention
// (Anthropic's): InputTokens excludes CacheReadTokens and CacheWriteTokens,
// so the prompt's size is their sum. Providers whose input count includes
// cached tokens (OpenAI's prompt_tokens) are split accordingly.
type Usage struct {
	InputTokens      int64 `json:"input_tokens" msgpack:"input_tokens"`
	OutputTokens     int64 `json:"output_tokens" msgpack:"output_tokens"`
	CacheReadTokens  int64 `json:"cache_read_tokens,omitempty" msgpack:"cache_read_tokens,omitempty"`
	CacheWriteTokens int64 `json:"cache_write_tokens,omitempty" msgpack:"cache_write_tokens,omitempty"`
}

// Response is the model's answer to one Request.
type Response struct {
	Model      string     `json:"model" msgpack:"model"`
	Text       string     `json:"text,omitempty" msgpack:"text,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty" msgpack:"tool_calls,omitempty"`
	StopReason string     `json:"stop_reason" msgpack:"stop_reason"`
	Usage      Usage      `json:"usage" msgpack:"usage"`
}

// Delta is a live streaming fragment (not durable).
type Delta struct {
	Text string `json:"text,omitempty"`
}

// Model is a chat model. onDelta may be nil; when set it is called with text
// fragments as they stream. Generate returns *APIError for provider errors so
// callers can decide whether and when to retry.
type Model interface {
	Generate(ctx context.Context, req Request, onDelta func(Delta)) (Response, error)
}

// Error codes.
const (
	CodeProviderError perr.Code = "LLM_PROVIDER_ERROR" // the provider answered with an error
	CodeBadConfig     perr.Code = "LLM_BAD_CONFIG"     // unknown provider, missing key, bad script
)

// APIError is a provider error with what a retry policy needs to know.
type APIError struct {
	Status     int           // HTTP status, 0 for transport errors
	Message    string        // the provider's message
	RetryAfter time.Duration // from the Retry-After header; 0 if absent
	Retryable  bool          // 429, 5xx, timeouts, connection errors
}

func (e *APIError) Error() string {
	return perr.New(CodeProviderError, retryFix(e.Retryable),
		"provider returned status %d: %s", e.Status, e.Message).Error()
}

func retryFix(retryable bool) string {
	if retryable {
		return "transient: retried with backoff"
	}
	return "check the model name, API key and request"
}
