// Package openai is the llm.Model for OpenAI's Chat Completions API (and
// servers compatible with it, via the base URL), through the official SDK
// (github.com/openai/openai-go/v3).
//
// Tools are function tools; a tool result is a "tool" message, and because
// that message has no error flag, an error result's content is prefixed with
// ErrorResultPrefix. Streaming asks for a final usage chunk
// (stream_options.include_usage). OpenAI caches prompt prefixes by itself;
// cached tokens are reported as CacheReadTokens.
//
// Usage is normalised to Anthropic's convention so budgets mean one thing:
// InputTokens excludes cache reads and writes (OpenAI's prompt_tokens
// includes them).
//
// Failure: the SDK's own retries are off (the durable loop retries, so every
// attempt is recorded). Provider errors come back as *llm.APIError
// (Retryable for 408, 409, 429, 5xx, server errors sent inside a stream,
// timeouts and broken connections); a cancelled ctx comes back as ctx.Err().
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/param"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/openai/openai-go/v3/shared"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/perr"
)

// Environment variables read when the config leaves a value empty.
const (
	EnvAPIKey  = "OPENAI_API_KEY"
	EnvBaseURL = "OPENAI_BASE_URL"
)

// ErrorResultPrefix starts the content of a tool message that reports a
// failed tool call (Chat Completions has no is_error flag).
const ErrorResultPrefix = "ERROR: "

func init() {
	llm.Register(llm.ProviderOpenAI, func(cfg llm.ProviderConfig) (llm.Model, error) {
		return New(cfg)
	})
}

// Model talks to the Chat Completions API. It is safe for concurrent use.
type Model struct {
	client       sdk.Client
	defaultModel string
}

// New builds a Model. APIKey falls back to OPENAI_API_KEY and BaseURL to
// OPENAI_BASE_URL; a missing key is a CodeBadConfig error. Extra SDK options
// (e.g. option.WithHTTPClient) are applied last.
func New(cfg llm.ProviderConfig, extra ...option.RequestOption) (*Model, error) {
	key, err := llm.ResolveAPIKey(llm.ProviderOpenAI, cfg.APIKey, EnvAPIKey)
	if err != nil {
		return nil, err
	}
	opts := []option.RequestOption{option.WithAPIKey(key), option.WithMaxRetries(0)}
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
		cc, err := m.client.Chat.Completions.New(ctx, params)
		if err != nil {
			return llm.Response{}, mapError(ctx, err)
		}
		return response(cc)
	}
	params.StreamOptions = sdk.ChatCompletionStreamOptionsParam{IncludeUsage: param.NewOpt(true)}
	stream := m.client.Chat.Completions.NewStreaming(ctx, params)
	defer stream.Close()
	var acc sdk.ChatCompletionAccumulator
	var usage *sdk.CompletionUsage
	for stream.Next() {
		chunk := stream.Current()
		if !acc.AddChunk(chunk) {
			return llm.Response{}, &llm.APIError{Message: "malformed stream chunk", Retryable: true}
		}
		if chunk.JSON.Usage.Valid() {
			u := chunk.Usage
			usage = &u
		}
		for _, c := range chunk.Choices {
			if c.Index == 0 && c.Delta.Content != "" {
				onDelta(llm.Delta{Text: c.Delta.Content})
			}
		}
	}
	if err := stream.Err(); err != nil {
		return llm.Response{}, mapError(ctx, err)
	}
	if len(acc.Choices) == 0 || acc.Choices[0].FinishReason == "" {
		if ctx.Err() != nil {
			return llm.Response{}, ctx.Err()
		}
		return llm.Response{}, &llm.APIError{Message: "stream ended before a finish_reason", Retryable: true}
	}
	if usage != nil {
		acc.Usage = *usage
	}
	return response(&acc.ChatCompletion)
}

func (m *Model) params(req llm.Request) (sdk.ChatCompletionNewParams, error) {
	model := req.Model
	if model == "" {
		model = m.defaultModel
	}
	if model == "" {
		return sdk.ChatCompletionNewParams{}, perr.New(llm.CodeBadConfig,
			"set the model name (e.g. gpt-4.1) in the agent or provider config",
			"no OpenAI model named in the request or the provider config")
	}
	p := sdk.ChatCompletionNewParams{Model: shared.ChatModel(model)}
	if req.MaxTokens > 0 {
		p.MaxCompletionTokens = param.NewOpt(int64(req.MaxTokens))
	}
	if req.Temperature != nil {
		p.Temperature = param.NewOpt(*req.Temperature)
	}
	for _, t := range req.Tools {
		schema, err := parameters(t)
		if err != nil {
			return sdk.ChatCompletionNewParams{}, err
		}
		fn := shared.FunctionDefinitionParam{Name: t.Name, Parameters: schema}
		if t.Description != "" {
			fn.Description = param.NewOpt(t.Description)
		}
		p.Tools = append(p.Tools, sdk.ChatCompletionFunctionTool(fn))
	}
	if req.System != "" {
		p.Messages = append(p.Messages, sdk.SystemMessage(req.System))
	}
	for _, msg := range req.Messages {
		p.Messages = append(p.Messages, messages(msg)...)
	}
	return p, nil
}

// parameters decodes a tool's JSON Schema, keeping number literals exact.
func parameters(t llm.Tool) (shared.FunctionParameters, error) {
	raw := bytes.TrimSpace(t.InputSchema)
	if len(raw) == 0 || string(raw) == "null" {
		return shared.FunctionParameters{"type": "object", "properties": map[string]any{}}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var schema map[string]any
	if err := dec.Decode(&schema); err != nil || schema == nil {
		return nil, perr.New(llm.CodeBadConfig,
			"give the tool a JSON Schema object as its input schema",
			"tool %q has an input schema that is not a JSON object", t.Name)
	}
	return schema, nil
}

// messages translates one message; a tool message becomes one "tool"
// message per result (then a user message if it also has text).
func messages(m llm.Message) []sdk.ChatCompletionMessageParamUnion {
	switch m.Role {
	case llm.RoleAssistant:
		a := sdk.ChatCompletionAssistantMessageParam{}
		if m.Text != "" {
			a.Content.OfString = param.NewOpt(m.Text)
		}
		for _, c := range m.ToolCalls {
			a.ToolCalls = append(a.ToolCalls, sdk.ChatCompletionMessageToolCallUnionParam{
				OfFunction: &sdk.ChatCompletionMessageFunctionToolCallParam{
					ID:       c.ID,
					Function: sdk.ChatCompletionMessageFunctionToolCallFunctionParam{Name: c.Name, Arguments: string(c.Input)},
				},
			})
		}
		return []sdk.ChatCompletionMessageParamUnion{{OfAssistant: &a}}
	case llm.RoleTool:
		var out []sdk.ChatCompletionMessageParamUnion
		for _, r := range m.ToolResults {
			content := r.Content
			if r.IsError {
				content = ErrorResultPrefix + content
			}
			out = append(out, sdk.ToolMessage(content, r.ToolCallID))
		}
		if m.Text != "" {
			out = append(out, sdk.UserMessage(m.Text))
		}
		return out
	}
	return []sdk.ChatCompletionMessageParamUnion{sdk.UserMessage(m.Text)}
}

// response translates a completion (plain or accumulated from a stream).
func response(cc *sdk.ChatCompletion) (llm.Response, error) {
	if len(cc.Choices) == 0 {
		return llm.Response{}, &llm.APIError{Status: http.StatusOK, Message: "the answer has no choices", Retryable: true}
	}
	ch := cc.Choices[0]
	u := cc.Usage
	cached := u.PromptTokensDetails.CachedTokens
	written := u.PromptTokensDetails.CacheWriteTokens
	r := llm.Response{
		Model:      cc.Model,
		Text:       ch.Message.Content,
		StopReason: stopReason(ch.FinishReason),
		Usage: llm.Usage{
			InputTokens:      max(0, u.PromptTokens-cached-written),
			OutputTokens:     u.CompletionTokens,
			CacheReadTokens:  cached,
			CacheWriteTokens: written,
		},
	}
	if r.Text == "" && ch.Message.Refusal != "" {
		r.Text = ch.Message.Refusal
	}
	for _, c := range ch.Message.ToolCalls {
		if c.Type != "" && c.Type != "function" {
			continue // custom tools are not used by Polos
		}
		r.ToolCalls = append(r.ToolCalls, llm.ToolCall{ID: c.ID, Name: c.Function.Name, Input: json.RawMessage(c.Function.Arguments)})
	}
	return r, nil
}

func stopReason(finish string) string {
	switch finish {
	case "stop":
		return llm.StopEndTurn
	case "tool_calls", "function_call":
		return llm.StopToolUse
	case "length":
		return llm.StopMaxTokens
	}
	return llm.StopOther // content_filter and anything newer
}

// mapError turns an SDK error into *llm.APIError (or ctx.Err()).
func mapError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ae *sdk.Error
	if errors.As(err, &ae) {
		msg := ae.Message
		if msg == "" {
			msg = strings.TrimSpace(ae.RawJSON())
		}
		if ae.Code != "" {
			msg = ae.Code + ": " + msg
		}
		header := http.Header{}
		if ae.Response != nil {
			header = ae.Response.Header
		}
		return llm.HTTPError(ae.StatusCode, header, msg, time.Now())
	}
	var se *ssestream.StreamError
	if errors.As(err, &se) {
		// An error object inside a 200 stream. Only a request the API
		// judged invalid fails the same way again.
		var body struct {
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(se.Event.Data, &body)
		msg := body.Error.Message
		if msg == "" {
			msg = se.Message
		}
		return &llm.APIError{Message: msg, Retryable: body.Error.Type != "invalid_request_error"}
	}
	if te := llm.TransportError(ctx, err); te != nil {
		return te
	}
	return err
}
