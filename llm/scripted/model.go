// Package scripted is an offline, deterministic llm.Model for demos and
// tests: a YAML script lists the answer to each LLM call in order.
//
//   - tool_calls:
//   - {name: write, input: {path: hello.js, content: "console.log('Hello, world!')"}}
//   - tool_calls:
//   - {name: exec, input: {command: node hello.js}}
//   - text: Done. It printed Hello, world!
//
// The answer is a pure function of the request: entry i answers a request
// that already holds i assistant messages. No counter is kept in memory, so a
// new process replaying a run after a crash gets the same answer for the same
// turn, and asking the same turn twice gives the same answer twice. Tool call
// IDs are "call_<turn>_<index>". When the script runs out, the model answers
// with a final text saying so (stop reason end_turn), which ends an agent
// loop instead of failing it.
package scripted

import (
	"context"
	"fmt"
	"strings"
	"unicode"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/perr"
)

// DefaultModelName is reported as Response.Model when the request names none.
const DefaultModelName = "scripted"

func init() {
	llm.Register(llm.ProviderScripted, func(cfg llm.ProviderConfig) (llm.Model, error) {
		if cfg.Script == "" {
			return nil, perr.New(llm.CodeBadConfig,
				"set the script path (e.g. --script answers.yaml) in the provider config",
				"the scripted provider needs a script file and none was given")
		}
		s, err := Load(cfg.Script)
		if err != nil {
			return nil, err
		}
		return New(s), nil
	})
}

// Model answers from a Script. It is safe for concurrent use.
type Model struct {
	script Script
}

// New returns a Model answering from s.
func New(s Script) *Model { return &Model{script: s} }

// Generate answers req from the script and streams the text word by word to
// onDelta. It fails only when ctx is done.
func (m *Model) Generate(ctx context.Context, req llm.Request, onDelta func(llm.Delta)) (llm.Response, error) {
	if err := ctx.Err(); err != nil {
		return llm.Response{}, err
	}
	resp := m.script.Respond(req)
	if onDelta != nil {
		for _, w := range Words(resp.Text) {
			onDelta(llm.Delta{Text: w})
		}
	}
	return resp, nil
}

// Turn is the number of assistant messages already in req: the index of the
// script entry that answers it.
func Turn(req llm.Request) int {
	n := 0
	for _, m := range req.Messages {
		if m.Role == llm.RoleAssistant {
			n++
		}
	}
	return n
}

// Respond is the pure function behind Generate: the answer to req.
func (s Script) Respond(req llm.Request) llm.Response {
	turn := Turn(req)
	e := s.Entry(turn)
	resp := llm.Response{
		Model:      req.Model,
		Text:       e.Text,
		StopReason: e.StopReason,
	}
	if resp.Model == "" {
		resp.Model = DefaultModelName
	}
	outBytes := len(e.Text)
	for i, c := range e.ToolCalls {
		resp.ToolCalls = append(resp.ToolCalls, llm.ToolCall{
			ID:    ToolCallID(turn, i),
			Name:  c.Name,
			Input: append([]byte(nil), c.Input...),
		})
		outBytes += len(c.Name) + len(c.Input)
	}
	if resp.StopReason == "" {
		resp.StopReason = llm.StopEndTurn
		if len(e.ToolCalls) > 0 {
			resp.StopReason = llm.StopToolUse
		}
	}
	if e.Usage != nil {
		resp.Usage = *e.Usage
	} else {
		resp.Usage = llm.Usage{
			InputTokens:  llm.EstimateTokens(req),
			OutputTokens: llm.EstimateTextTokens(outBytes),
		}
	}
	return resp
}

// Entry returns the entry answering turn, or the "script ran out" answer
// when the script has no entry for it.
func (s Script) Entry(turn int) Entry {
	if turn < len(s.Entries) {
		return s.Entries[turn]
	}
	name := s.Name
	if name == "" {
		name = "(unnamed)"
	}
	return Entry{Text: fmt.Sprintf(
		"The script %s has no answer for LLM call %d (it has %d), so the scripted model stops here.",
		name, turn+1, len(s.Entries))}
}

// ToolCallID is the deterministic ID of the index-th tool call of a turn.
func ToolCallID(turn, index int) string { return fmt.Sprintf("call_%d_%d", turn, index) }

// Words splits text into streaming fragments, one word each with the
// whitespace after it, so that concatenating them gives text back exactly.
func Words(text string) []string {
	var out []string
	start := 0
	inSpace := true
	for i, r := range text {
		space := unicode.IsSpace(r)
		if inSpace && !space && i > start && strings.TrimSpace(text[start:i]) != "" {
			out = append(out, text[start:i])
			start = i
		}
		inSpace = space
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}
