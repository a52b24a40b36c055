package agent

import (
	"context"
	"encoding/json"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/policy"
	"github.com/polos-run/polos/ratelimit"
	"github.com/polos-run/polos/sandbox"
)

// GrantStore keeps "allow always" grants (hitl.Grants implements it).
type GrantStore interface {
	Match(ctx context.Context, scopes hitl.Scopes, kind hitl.Kind, subject string) (*hitl.Grant, bool, error)
	Record(ctx context.Context, g *hitl.Grant) error
}

// Deps are the outside world an agent run reaches. Everything here is
// called only from inside recorded steps, so a replay never calls it again
// for completed work.
type Deps struct {
	// Sandboxes returns the provider for an env name (usually a
	// dispatch.Client, so the executor needs no Docker itself).
	Sandboxes func(env string) (sandbox.Provider, error)
	// Models builds a model; nil means llm.New.
	Models func(llm.ProviderConfig) (llm.Model, error)
	// Grants persists allow-always grants; nil keeps them for the run only.
	Grants GrantStore
	// Stream, if set, receives live token deltas (subject
	// polos.<ns>.stream.<runID>); not durable.
	Stream func(runID string, d StreamDelta)
	// Limiter shares requests/min and tokens/min per provider key and
	// model across every executor; nil means no rate limiting.
	Limiter *ratelimit.Bucket
	// Budget pauses a run that would cross a token or cost budget; nil
	// means no budgets.
	Budget *ratelimit.Budget
	// Sessions continues conversations across runs of a session
	// (`polos run --session ID`); nil means every run starts fresh.
	Sessions SessionStore
}

// StreamDelta is one live fragment published while an LLM call streams.
type StreamDelta struct {
	RunID string `json:"run_id"`
	Turn  int    `json:"turn"`
	Text  string `json:"text"`
}

// Input is what an agent run receives: a JSON string (the prompt) or this
// object.
type Input struct {
	Prompt string `json:"prompt"`
	// Sandbox, when set, is an existing sandbox the agent works in (several
	// agents of one flow share it); the agent then neither creates nor
	// destroys one.
	Sandbox *sandbox.Info `json:"sandbox,omitempty"`
}

// UnmarshalJSON accepts a bare string as the prompt.
func (in *Input) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		in.Prompt = s
		return nil
	}
	type plain Input
	return json.Unmarshal(b, (*plain)(in))
}

// Output is an agent run's result.
type Output struct {
	Text       string          `json:"text"`
	Structured json.RawMessage `json:"structured,omitempty"` // the answer parsed against output_schema
	StopReason string          `json:"stop_reason"`
	Turns      int             `json:"turns"`
	Usage      llm.Usage       `json:"usage"`
	CostUSD    float64         `json:"cost_usd"`
}

// LLMCall is what one LLM step records.
type LLMCall struct {
	Response      llm.Response `json:"response"`
	RequestDigest string       `json:"request_digest"`
	Model         string       `json:"model"`
	LatencyMs     int64        `json:"latency_ms"`
	CostUSD       float64      `json:"cost_usd"`
}

// PolicyRecord is what a policy step records: the decision and the digest
// of the policy that made it, so a replay gets the same decision even if
// the policy changed since.
type PolicyRecord struct {
	policy.Result
	Grant string `json:"grant,omitempty"` // grant ID that lifted an ask
}

// ToolOutcome is what a tool step records.
type ToolOutcome struct {
	Output  json.RawMessage `json:"output"`
	IsError bool            `json:"is_error,omitempty"`
	Lost    bool            `json:"sandbox_lost,omitempty"`
}

// Register adds the agent as a workflow named cfg.ID.
func Register(reg *polos.Registry, cfg Config, deps Deps) error {
	if cfg.ID == "" {
		return perr.New(CodeAgentConfig, "give the agent an id", "agent has no id")
	}
	if deps.Models == nil {
		deps.Models = llm.New
	}
	pol, err := policy.New(cfg.Policy)
	if err != nil {
		return perr.Wrap(err, CodeAgentConfig, "fix the agent's policy", "agent %s", cfg.ID)
	}
	for _, t := range cfg.tools() {
		if _, ok := cfg.custom(t); ok {
			continue
		}
		if _, err := lookupTool(t); err != nil {
			return perr.Wrap(err, CodeAgentConfig, "", "agent %s", cfg.ID)
		}
	}
	schema, err := compileSchema(cfg.ID, cfg.OutputSchema)
	if err != nil {
		return err
	}
	a := &loop{cfg: cfg, deps: deps, pol: pol, schema: schema}
	polos.Register(reg, cfg.ID, a.run)
	return nil
}

type loop struct {
	cfg    Config
	deps   Deps
	pol    *policy.Policy
	schema *jsonschema.Schema
}

// run is the workflow. Everything outside recorded steps is deterministic
// given the history.
func (a *loop) run(ctx polos.Context, in Input) (Output, error) {
	model, err := a.deps.Models(a.cfg.Provider)
	if err != nil {
		return Output{}, polos.NonRetryable(err)
	}
	r := &runState{loop: a, ctx: ctx, model: model}
	if in.Sandbox != nil && in.Sandbox.ID != "" {
		sb := *in.Sandbox
		r.sb, r.sharedSandbox = &sb, true
	}
	if h := a.cfg.Hooks.OnStart; h != nil {
		if err := h(ctx, in); err != nil {
			return Output{}, err
		}
	}
	out, err := r.turns(in)
	// Not deferred: a parked run unwinds through defers, and a durable call
	// there would be recorded while parking.
	r.destroySandbox()
	if err == nil {
		r.saveSession()
		if h := a.cfg.Hooks.OnEnd; h != nil {
			err = h(ctx, out)
		}
	}
	return out, err
}

func (r *runState) turns(in Input) (Output, error) {
	a, ctx := r.loop, r.ctx
	msgs := append(r.loadSession(), llm.Message{Role: llm.RoleUser, Text: in.Prompt})
	r.msgs = &msgs
	var out Output
	guardFails, schemaFails := 0, 0
	maxSteps := a.cfg.MaxSteps
	if maxSteps <= 0 {
		maxSteps = DefaultMaxSteps
	}
	for turn := 1; ; turn++ {
		if turn > maxSteps {
			out.StopReason = "max_steps"
			return out, nil
		}
		call, err := r.callLLM(turn, msgs)
		if err != nil {
			return out, err
		}
		_ = ctx
		resp := call.Response
		out.Turns, out.Text = turn, resp.Text
		out.Usage.InputTokens += resp.Usage.InputTokens
		out.Usage.OutputTokens += resp.Usage.OutputTokens
		out.Usage.CacheReadTokens += resp.Usage.CacheReadTokens
		out.Usage.CacheWriteTokens += resp.Usage.CacheWriteTokens
		out.CostUSD += call.CostUSD
		msgs = append(msgs, llm.Message{Role: llm.RoleAssistant, Text: resp.Text, ToolCalls: resp.ToolCalls})
		if len(resp.ToolCalls) == 0 {
			out.StopReason = "end_turn"
			if a.schema != nil {
				structured, serr := checkOutput(a.schema, out.Text)
				if serr != nil {
					if schemaFails++; schemaFails > 1 {
						return out, polos.NonRetryable(serr)
					}
					msgs = append(msgs, llm.Message{Role: llm.RoleUser, Text: serr.Error() + "\nAnswer again with only the JSON value, matching this schema:\n" + string(a.cfg.OutputSchema)})
					_ = ctx.Annotate("output_schema_failed", map[string]string{"error": serr.Error()})
					continue
				}
				out.Structured = structured
			}
			if ferr := r.checkGuardrails(out); ferr != nil {
				guardFails++
				maxRetries := a.cfg.MaxGuardrailRetries
				if maxRetries <= 0 {
					maxRetries = DefaultMaxGuardrailRetries
				}
				if guardFails > maxRetries {
					return out, polos.NonRetryable(perr.Wrap(ferr, CodeGuardrailFailed, "change the guardrail or the prompt", "the answer failed a guardrail %d times", guardFails))
				}
				// A new user turn: the next LLM call is a new step with
				// the feedback in its request, not a replay of this one.
				msgs = append(msgs, llm.Message{Role: llm.RoleUser, Text: "Your answer failed a check: " + ferr.Error() + "\nPlease fix it and answer again."})
				_ = ctx.Annotate("guardrail_failed", map[string]string{"error": ferr.Error()})
				continue
			}
			return out, nil
		}
		if a.cfg.StopOnText && resp.Text != "" {
			out.StopReason = "has_text"
			return out, nil
		}
		results := make([]llm.ToolResult, 0, len(resp.ToolCalls))
		stop := false
		for i, tc := range resp.ToolCalls {
			res := r.runTool(turn, i, tc)
			results = append(results, res)
			if a.cfg.StopAfterTool != "" && tc.Name == a.cfg.StopAfterTool && !res.IsError {
				stop = true
			}
		}
		msgs = append(msgs, llm.Message{Role: llm.RoleTool, ToolResults: results})
		r.msgs = &msgs
		if stop {
			out.StopReason = "executed_tool"
			return out, nil
		}
		if a.cfg.MaxTotalTokens > 0 && out.Usage.InputTokens+out.Usage.OutputTokens >= a.cfg.MaxTotalTokens {
			out.StopReason = "max_tokens"
			return out, nil
		}
	}
}

type runState struct {
	*loop
	msgs    *[]llm.Message // the conversation so far (saved to the session)
	ctx     polos.Context
	model   llm.Model
	sb      *sandbox.Info
	resets  int
	granted map[string]bool // allow-always grants made in this run (kind:subject)
	// sharedSandbox: the sandbox came with the input; its owner destroys it.
	sharedSandbox bool
	// fromStep: the tool result being built is a recorded tool step's
	// outcome (runTool records the others).
	fromStep string
}

func (r *runState) checkGuardrails(out Output) error {
	for _, g := range r.cfg.Guardrails {
		if err := g(out); err != nil {
			return err
		}
	}
	return nil
}
