// Package agent is the durable agent loop: each LLM call is one recorded
// step, each tool call is a recorded step, and every policy decision and
// approval is an event, so after a crash a run continues from its last
// completed step without repeating an LLM call already paid for.
package agent

import (
	"context"
	"encoding/json"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/perr"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/policy"
	"github.com/polos-run/polos/sandbox"
)

// Tool names.
const (
	ToolExec    = "exec"
	ToolRead    = "read"
	ToolWrite   = "write"
	ToolEdit    = "edit"
	ToolGlob    = "glob"
	ToolGrep    = "grep"
	ToolAskUser = "ask_user"
)

// AllTools is the default tool set.
var AllTools = builtinNames()

// Error codes.
const (
	CodeAgentConfig     perr.Code = "AGENT_CONFIG"     // an agent declaration is invalid
	CodeGuardrailFailed perr.Code = "GUARDRAIL_FAILED" // answers kept failing a guardrail
)

// Defaults.
const (
	DefaultMaxSteps            = 30   // LLM turns before the run stops
	DefaultConversationHistory = 50   // messages sent to the model (plus the first user message)
	DefaultMaxResponseTokens   = 4096 // per LLM call
	DefaultLLMAttempts         = 6
	DefaultLLMInitialBackoff   = time.Second
	DefaultLLMMaxBackoff       = time.Minute
	DefaultToolResultChars     = 100_000 // a tool result longer than this is cut for the model
)

// Config declares one agent. polos.yaml's `agents:` entries and the Go
// registration API produce the same Config.
type Config struct {
	ID           string
	Provider     llm.ProviderConfig
	SystemPrompt string
	MaxTokens    int // per response; 0 = DefaultMaxResponseTokens

	Sandbox SandboxConfig
	Policy  policy.Config
	Tools   []string // nil = AllTools

	// Stop conditions: the first reached ends the run.
	MaxSteps       int    // LLM turns; 0 = DefaultMaxSteps
	MaxTotalTokens int64  // input+output tokens over the run; 0 = no limit
	StopAfterTool  string // stop after this tool ran (executed_tool)
	StopOnText     bool   // stop at the first answer with text, even with tool calls (has_text)

	ConversationHistory int // messages kept; 0 = DefaultConversationHistory
	Queue               string
	// ApprovalTimeout makes an unanswered approval count as a rejection
	// after this long (0 = wait for ever).
	ApprovalTimeout time.Duration

	// CustomTools are Go tools the agent may call besides the built-in ones.
	CustomTools []CustomTool
	// Hooks run inside the workflow at fixed points of the loop.
	Hooks Hooks
	// Guardrails check a final answer; a failure makes a NEW LLM call with
	// the failure as feedback (never a replay of the recorded answer), at
	// most MaxGuardrailRetries times, after which the run fails.
	Guardrails          []Guardrail
	MaxGuardrailRetries int // 0 = DefaultMaxGuardrailRetries

	// OutputSchema is a JSON Schema the final answer must match (as JSON).
	// An answer that does not gets one fix-up turn (a new LLM call with the
	// validation error); a second failure fails the run. The parsed answer
	// is Output.Structured.
	OutputSchema json.RawMessage
}

// DefaultMaxGuardrailRetries bounds the new LLM calls guardrails may ask for.
const DefaultMaxGuardrailRetries = 2

// CustomTool is a tool written in Go. Run executes inside a recorded step
// (so it runs once per call even across crashes, and key is its
// idempotency key); its result is marshalled to JSON for the model.
type CustomTool struct {
	Tool llm.Tool
	Run  func(ctx context.Context, key string, input json.RawMessage) (any, error)
	// Ask makes every call wait for a person's approval (tool_approval form)
	// unless an allow-always grant covers the tool.
	Ask bool
}

// Hooks are called from workflow code, so they replay like it: make them
// deterministic, and put side effects in polos.Step calls of their own.
// An error from OnStart or OnEnd fails the run; from the tool hooks, it
// becomes the tool's error result.
type Hooks struct {
	OnStart     func(ctx polos.Context, in Input) error
	OnEnd       func(ctx polos.Context, out Output) error
	OnToolStart func(ctx polos.Context, call llm.ToolCall) error
	OnToolEnd   func(ctx polos.Context, call llm.ToolCall, result llm.ToolResult) error
}

// Guardrail checks an answer; a non-nil error is the feedback for the
// model's next attempt. It must be a pure function of the output.
type Guardrail func(out Output) error

// SandboxConfig chooses where tools run.
type SandboxConfig struct {
	Env  string       // local | docker | e2b
	Spec sandbox.Spec // image, workspace_dir, network, memory, ...
}

func (c Config) tools() []string {
	out := c.Tools
	if out == nil {
		out = AllTools
	}
	for _, ct := range c.CustomTools {
		out = append(out[:len(out):len(out)], ct.Tool.Name)
	}
	return out
}

func (c Config) custom(name string) (CustomTool, bool) {
	for _, ct := range c.CustomTools {
		if ct.Tool.Name == name {
			return ct, true
		}
	}
	return CustomTool{}, false
}
