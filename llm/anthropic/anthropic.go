// Package anthropic is the llm.Model for Anthropic's Messages API, through
// the official SDK (github.com/anthropics/anthropic-sdk-go).
//
// Prompt caching: every request marks three cache breakpoints
// (cache_control ephemeral): the system prompt, the last tool and the last
// block of the last message. Tools and system are stable across an agent
// loop, and each turn only appends messages, so turn N+1 reads turn N's
// prefix from the cache and pays full price only for the new messages.
//
// Failure: the SDK's own retries are off (the durable loop retries, so every
// attempt is recorded). Provider errors come back as *llm.APIError
// (Retryable for 408, 409, 429, 5xx and 529 overloaded, for errors the API
// sends inside a stream, for timeouts and broken connections); a cancelled
// ctx comes back as ctx.Err().
package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/anthropics/anthropic-sdk-go/packages/param"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/perr"
)

// Environment variables read when the config leaves a value empty.
const (
	EnvAPIKey  = "ANTHROPIC_API_KEY"
	EnvBaseURL = "ANTHROPIC_BASE_URL"
)

// DefaultMaxTokens is sent when a request sets no MaxTokens (the API
// requires a value).
const DefaultMaxTokens = 8192

// MalformedInputKey wraps a tool input that is not a JSON object when it is
// sent back in the conversation (the API accepts only objects): the model
// produced {"_malformed_input": "<its text>"} in its eyes.
const MalformedInputKey = "_malformed_input"

func init() {
	llm.Register(llm.ProviderAnthropic, func(cfg llm.ProviderConfig) (llm.Model, error) {
		return New(cfg)
	})
}

// Model talks to the Messages API. It is safe for concurrent use.
type Model struct {
	client       sdk.Client
	defaultModel string
}

// New builds a Model. APIKey falls back to ANTHROPIC_API_KEY and BaseURL to
// ANTHROPIC_BASE_URL; a missing key is a CodeBadConfig error. Extra SDK
// options (e.g. option.WithHTTPClient) are applied last.
func New(cfg llm.ProviderConfig, extra ...option.RequestOption) (*Model, error) {
	key, err := llm.ResolveAPIKey(llm.ProviderAnthropic, cfg.APIKey, EnvAPIKey)
	if err != nil {
		return nil, err
	}
	opts := []option.RequestOption{
		// Resolve credentials ourselves: no profiles or federation surprises.
		option.WithoutEnvironmentDefaults(),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
	}
	if base := llm.ResolveString(cfg.BaseURL, EnvBaseURL); base != "" {
		opts = append(opts, option.WithBaseURL(base))
	}
	opts = append(opts, extra...)
	return &Model{client: sdk.NewClient(opts...), defaultModel: cfg.Model}, nil
}

// Generate runs one turn. With onDelta it streams and calls onDelta with
// each text fragment; the returned Response is the same either way.
func (m *Model) Generate(ctx context.Context, req llm.Request, onDelta func(llm.Delta)) (llm.Response, error) {
	params, err := m.params(req)
	if err != nil {
		return llm.Response{}, err
	}
	if onDelta == nil {
		msg, err := m.client.Messages.New(ctx, params)
		if err != nil {
			return llm.Response{}, mapError(ctx, err)
		}
		return response(msg), nil
	}
	stream := m.client.Messages.NewStreaming(ctx, params)
	defer stream.Close()
	var acc sdk.Message
	stopped := false
	for stream.Next() {
		ev := stream.Current()
		if err := acc.Accumulate(ev); err != nil {
			return llm.Response{}, &llm.APIError{Message: "malformed stream: " + err.Error(), Retryable: true}
		}
		switch ev.Type {
		case "content_block_delta":
			if ev.Delta.Type == "text_delta" && ev.Delta.Text != "" {
				onDelta(llm.Delta{Text: ev.Delta.Text})
			}
		case "message_stop":
			stopped = true
		}
	}
	if err := stream.Err(); err != nil {
		return llm.Response{}, mapError(ctx, err)
	}
	if !stopped {
		if ctx.Err() != nil {
			return llm.Response{}, ctx.Err()
		}
		return llm.Response{}, &llm.APIError{Message: "stream ended before message_stop", Retryable: true}
	}
	return response(&acc), nil
}

// params translates a request. Errors are CodeBadConfig: the caller built a
// request the API cannot take (no model, bad tool schema).
func (m *Model) params(req llm.Request) (sdk.MessageNewParams, error) {
	model := req.Model
	if model == "" {
		model = m.defaultModel
	}
	if model == "" {
		return sdk.MessageNewParams{}, perr.New(llm.CodeBadConfig,
			"set the model name (e.g. claude-sonnet-4-5) in the agent or provider config",
			"no Anthropic model named in the request or the provider config")
	}
	p := sdk.MessageNewParams{Model: sdk.Model(model), MaxTokens: int64(req.MaxTokens)}
	if p.MaxTokens <= 0 {
		p.MaxTokens = DefaultMaxTokens
	}
	if req.Temperature != nil {
		p.Temperature = param.NewOpt(*req.Temperature)
	}
	if req.System != "" {
		p.System = []sdk.TextBlockParam{{Text: req.System, CacheControl: sdk.NewCacheControlEphemeralParam()}}
	}
	for _, t := range req.Tools {
		schema, err := inputSchema(t)
		if err != nil {
			return sdk.MessageNewParams{}, err
		}
		tool := sdk.ToolParam{Name: t.Name, InputSchema: schema}
		if t.Description != "" {
			tool.Description = param.NewOpt(t.Description)
		}
		p.Tools = append(p.Tools, sdk.ToolUnionParam{OfTool: &tool})
	}
	if n := len(p.Tools); n > 0 {
		p.Tools[n-1].OfTool.CacheControl = sdk.NewCacheControlEphemeralParam()
	}
	p.Messages = messages(req.Messages)
	if n := len(p.Messages); n > 0 {
		blocks := p.Messages[n-1].Content
		if cc := blocks[len(blocks)-1].GetCacheControl(); cc != nil {
			*cc = sdk.NewCacheControlEphemeralParam()
		}
	}
	return p, nil
}

// inputSchema sends the tool's JSON Schema verbatim ({"type":"object"} when
// empty).
func inputSchema(t llm.Tool) (sdk.ToolInputSchemaParam, error) {
	raw := []byte(t.InputSchema)
	if len(strings.TrimSpace(string(raw))) == 0 || string(raw) == "null" {
		raw = []byte(`{"type":"object","properties":{}}`)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return sdk.ToolInputSchemaParam{}, perr.Wrap(err, llm.CodeBadConfig,
			"give the tool a JSON Schema object as its input schema",
			"tool %q has an input schema that is not a JSON object", t.Name)
	}
	return param.Override[sdk.ToolInputSchemaParam](json.RawMessage(raw)), nil
}

// messages translates the conversation. Tool messages become user messages
// of tool_result blocks; messages with nothing to send are dropped (the API
// rejects empty content and merges consecutive same-role turns).
func messages(in []llm.Message) []sdk.MessageParam {
	var out []sdk.MessageParam
	for _, m := range in {
		var blocks []sdk.ContentBlockParamUnion
		for _, r := range m.ToolResults {
			blocks = append(blocks, sdk.NewToolResultBlock(r.ToolCallID, r.Content, r.IsError))
		}
		if strings.TrimSpace(m.Text) != "" {
			blocks = append(blocks, sdk.NewTextBlock(m.Text))
		}
		for _, c := range m.ToolCalls {
			blocks = append(blocks, sdk.NewToolUseBlock(c.ID, toolInput(c.Input), c.Name))
		}
		if len(blocks) == 0 {
			continue
		}
		if m.Role == llm.RoleAssistant {
			out = append(out, sdk.NewAssistantMessage(blocks...))
		} else {
			out = append(out, sdk.NewUserMessage(blocks...))
		}
	}
	return out
}

// toolInput returns a tool call's input as the API accepts it: a JSON object.
func toolInput(raw json.RawMessage) any {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) == nil && obj != nil {
		return raw
	}
	return map[string]string{MalformedInputKey: string(raw)}
}

// response translates a (possibly accumulated) message.
func response(msg *sdk.Message) llm.Response {
	r := llm.Response{
		Model:      string(msg.Model),
		StopReason: stopReason(msg.StopReason),
		Usage: llm.Usage{
			InputTokens:      msg.Usage.InputTokens,
			OutputTokens:     msg.Usage.OutputTokens,
			CacheReadTokens:  msg.Usage.CacheReadInputTokens,
			CacheWriteTokens: msg.Usage.CacheCreationInputTokens,
		},
	}
	var text strings.Builder
	for _, b := range msg.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			input := json.RawMessage(b.Input)
			if len(input) == 0 {
				input = json.RawMessage("{}")
			}
			r.ToolCalls = append(r.ToolCalls, llm.ToolCall{ID: b.ID, Name: b.Name, Input: append(json.RawMessage(nil), input...)})
		}
	}
	r.Text = text.String()
	return r
}

func stopReason(s sdk.StopReason) string {
	switch s {
	case sdk.StopReasonEndTurn:
		return llm.StopEndTurn
	case sdk.StopReasonToolUse:
		return llm.StopToolUse
	case sdk.StopReasonMaxTokens:
		return llm.StopMaxTokens
	}
	// stop_sequence, pause_turn, refusal, and anything newer.
	return llm.StopOther
}

// errorTypeStatus is the HTTP status Anthropic documents for each error
// type; it classifies errors sent inside a 200 stream.
var errorTypeStatus = map[string]int{
	"invalid_request_error": http.StatusBadRequest,
	"authentication_error":  http.StatusUnauthorized,
	"permission_error":      http.StatusForbidden,
	"not_found_error":       http.StatusNotFound,
	"request_too_large":     http.StatusRequestEntityTooLarge,
	"rate_limit_error":      http.StatusTooManyRequests,
	"api_error":             http.StatusInternalServerError,
	"timeout_error":         http.StatusGatewayTimeout,
	"overloaded_error":      llm.StatusOverloaded,
}

// mapError turns an SDK error into *llm.APIError (or ctx.Err()).
func mapError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ae *sdk.Error
	if !errors.As(err, &ae) {
		if te := llm.TransportError(ctx, err); te != nil {
			return te
		}
		return err
	}
	var body struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal([]byte(ae.RawJSON()), &body)
	status := ae.StatusCode
	if status < 400 { // an error event inside a 200 stream
		status = errorTypeStatus[body.Error.Type]
		if status == 0 {
			status = http.StatusInternalServerError
		}
	}
	msg := body.Error.Message
	if msg == "" {
		msg = strings.TrimSpace(ae.RawJSON())
	}
	if body.Error.Type != "" {
		msg = body.Error.Type + ": " + msg
	}
	header := http.Header{}
	if ae.Response != nil && ae.StatusCode >= 400 {
		header = ae.Response.Header
	}
	return llm.HTTPError(status, header, msg, time.Now())
}
