package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/events"
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
}

func (r *runState) callLLM(turn int, msgs []llm.Message) (LLMCall, error) {
	req := llm.Request{Model: r.cfg.Provider.Model, System: r.cfg.SystemPrompt, Messages: trimHistory(msgs, r.historyLimit()), MaxTokens: r.cfg.MaxTokens}
	if req.MaxTokens == 0 {
		req.MaxTokens = DefaultMaxResponseTokens
	}
	for _, name := range r.cfg.tools() {
		if ct, ok := r.cfg.custom(name); ok {
			req.Tools = append(req.Tools, ct.Tool)
			continue
		}
		req.Tools = append(req.Tools, builtinTools[name].Def)
	}
	runID := r.ctx.RunID()
	est := llm.EstimateTokens(req) + int64(min(req.MaxTokens, DefaultOutputEstimate))
	if err := r.waitForBudget(turn, est); err != nil {
		return LLMCall{}, err
	}
	key := r.rateKey()
	r.waitForRate(turn, key, est)
	return polos.Step(r.ctx, fmt.Sprintf("llm:%d", turn), func(c context.Context, _ string) (LLMCall, error) {
		var onDelta func(llm.Delta)
		if r.deps.Stream != nil {
			onDelta = func(d llm.Delta) { r.deps.Stream(runID, StreamDelta{RunID: runID, Turn: turn, Text: d.Text}) }
		}
		t0 := time.Now()
		resp, err := r.model.Generate(c, req, onDelta)
		if err != nil {
			return LLMCall{}, err
		}
		call := LLMCall{Response: resp, RequestDigest: llm.RequestDigest(req), Model: req.Model,
			LatencyMs: time.Since(t0).Milliseconds(), CostUSD: Cost(req.Model, resp.Usage)}
		used := resp.Usage.InputTokens + resp.Usage.OutputTokens + resp.Usage.CacheReadTokens + resp.Usage.CacheWriteTokens
		if r.deps.Limiter != nil {
			_ = r.deps.Limiter.Correct(c, key, int(est), int(used))
		}
		if r.deps.Budget != nil {
			_ = r.deps.Budget.Add(c, ratelimit.ScopesOf(runID, r.cfg.ID), ratelimit.Usage{Tokens: used, Cost: call.CostUSD})
		}
		return call, nil
	}, polos.WithRetry(llmRetryPolicy), polos.Idempotent())
}

// DefaultOutputEstimate is the output tokens assumed for a call before it
// is made (rate limits and budgets are corrected from the reported usage).
const DefaultOutputEstimate = 512

func (r *runState) rateKey() ratelimit.RateKey {
	apiKey := r.cfg.Provider.APIKey
	if apiKey == "" {
		apiKey = r.cfg.Provider.Provider // keys from the environment share one bucket per provider
	}
	return ratelimit.RateKey{Provider: r.cfg.Provider.Provider, KeyID: ratelimit.KeyFingerprint(apiKey), Model: r.cfg.Provider.Model}
}

// waitForRate books the call in the shared token bucket (a recorded step)
// and, if the bucket says so, sleeps durably first; the wait shows in
// `polos tail` as a rate_limit_wait annotation. Calls are delayed, never
// failed.
func (r *runState) waitForRate(turn int, key ratelimit.RateKey, est int64) {
	if r.deps.Limiter == nil {
		return
	}
	waitMs, err := polos.Step(r.ctx, fmt.Sprintf("ratelimit:%d", turn), func(c context.Context, _ string) (int64, error) {
		d, err := r.deps.Limiter.Reserve(c, key, 1, int(est))
		return d.Milliseconds(), err
	}, polos.Idempotent())
	if err != nil || waitMs <= 0 {
		return
	}
	_ = r.ctx.Annotate("rate_limit_wait", map[string]string{"wait_ms": fmt.Sprint(waitMs), "key": key.String()})
	_ = r.ctx.Sleep(time.Duration(waitMs) * time.Millisecond)
}

// waitForBudget pauses the run (a suspend with a `_source: budget` form)
// while the call would cross a run, agent or namespace budget; `polos
// budget set` raises the budget and resumes it. It re-checks after each
// resume.
func (r *runState) waitForBudget(turn int, est int64) error {
	if r.deps.Budget == nil {
		return nil
	}
	scopes := ratelimit.ScopesOf(r.ctx.RunID(), r.cfg.ID)
	for attempt := 0; ; attempt++ {
		form, err := polos.Step(r.ctx, fmt.Sprintf("budget:%d", turn), func(c context.Context, _ string) (json.RawMessage, error) {
			err := r.deps.Budget.Check(c, scopes, ratelimit.Usage{Tokens: est, Cost: Cost(r.cfg.Provider.Model, llm.Usage{InputTokens: est})})
			if ex, ok := ratelimit.ExceededOf(err); ok {
				return ratelimit.BudgetForm(ex), nil
			}
			return nil, err
		}, polos.Idempotent())
		if err != nil {
			return err
		}
		if len(form) == 0 || string(form) == "null" {
			return nil
		}
		if _, err := r.ctx.Suspend(fmt.Sprintf("budget-%d-%d", turn, attempt), form); err != nil {
			return err
		}
	}
}

// llmRetryPolicy retries transient provider errors (429, 5xx, timeouts),
// honouring Retry-After; every attempt is a step_failed event.
var llmRetryPolicy = polos.RetryPolicy{
	MaxAttempts: DefaultLLMAttempts, InitialInterval: DefaultLLMInitialBackoff, Multiplier: 2, MaxInterval: DefaultLLMMaxBackoff,
	Retryable: func(err error) bool {
		var ae *llm.APIError
		if errors.As(err, &ae) {
			return ae.Retryable
		}
		return false
	},
	RetryAfter: func(err error) time.Duration {
		var ae *llm.APIError
		if errors.As(err, &ae) {
			return ae.RetryAfter
		}
		return 0
	},
}

func (r *runState) historyLimit() int {
	if r.cfg.ConversationHistory > 0 {
		return r.cfg.ConversationHistory
	}
	return DefaultConversationHistory
}

// trimHistory keeps the first user message and the last `limit` messages,
// never separating an assistant tool call from its tool results: the cut
// moves forward until it starts at a user or assistant message that does
// not answer an earlier call.
func trimHistory(msgs []llm.Message, limit int) []llm.Message {
	if len(msgs) <= limit+1 {
		return msgs
	}
	cut := len(msgs) - limit
	for cut < len(msgs) && msgs[cut].Role == llm.RoleTool {
		cut++
	}
	out := append([]llm.Message{msgs[0]}, msgs[cut:]...)
	return out
}

// ---- tools ----

func errorResult(id, format string, args ...any) llm.ToolResult {
	return llm.ToolResult{ToolCallID: id, Content: fmt.Sprintf(format, args...), IsError: true}
}

func (r *runState) allowed(name string) bool {
	for _, t := range r.cfg.tools() {
		if t == name {
			return true
		}
	}
	return false
}

// runTool answers one tool call. Unknown tools and malformed arguments get
// an error result the model can read (never a provider error next turn).
func (r *runState) runTool(turn, i int, tc llm.ToolCall) llm.ToolResult {
	if h := r.cfg.Hooks.OnToolStart; h != nil {
		if err := h(r.ctx, tc); err != nil {
			return errorResult(tc.ID, "%s refused: %v", tc.Name, err)
		}
	}
	res := r.runToolInner(turn, i, tc)
	if h := r.cfg.Hooks.OnToolEnd; h != nil {
		if err := h(r.ctx, tc, res); err != nil {
			return errorResult(tc.ID, "%v", err)
		}
	}
	return res
}

func (r *runState) runToolInner(turn, i int, tc llm.ToolCall) llm.ToolResult {
	if !r.allowed(tc.Name) {
		return errorResult(tc.ID, "unknown tool %q; available tools: %s", tc.Name, strings.Join(r.cfg.tools(), ", "))
	}
	key := fmt.Sprintf("approve-%d-%d", turn, i)
	if ct, ok := r.cfg.custom(tc.Name); ok {
		return r.runCustom(ct, tc, key)
	}
	spec := builtinTools[tc.Name] // Register checked every configured name
	req, err := spec.Parse(tc.Input)
	if err != nil {
		return errorResult(tc.ID, "invalid arguments for %s: %v", tc.Name, err)
	}
	if spec.Ask != nil {
		return spec.Ask(r, tc, req, key)
	}
	dec := r.decide(tc.Name, spec, req)
	switch dec.Decision {
	case policy.DecisionDeny:
		why := ""
		if len(dec.Reasons) > 0 {
			why = dec.Reasons[0].Why + " (" + dec.Reasons[0].Rule + ")"
		}
		return errorResult(tc.ID, "denied by policy: %s", why)
	case policy.DecisionAsk:
		rejected := func(feedback string) llm.ToolResult { return spec.Rejected(req, feedback) }
		if refused, ok := r.approve(tc, key, approvalPayload(spec.Approval(req, tc.Input), dec), rejected); !ok {
			return refused
		}
	}
	if spec.Network != nil {
		req = spec.Network(req, r.execNetwork(dec))
	}
	return r.execute(tc, spec, req)
}

// execNetwork decides whether an exec that policy let through runs with
// the network (sandbox.ExecRequest.Network; the local provider runs every
// other command without one): when the policy's capabilities.network is
// allow, or when it is ask and this command was flagged as reaching the
// network, so that the approval (or the grant that lifted it) covered the
// network. Without a network rule, commands get no network.
func (r *runState) execNetwork(dec PolicyRecord) bool {
	nw, ok := r.cfg.Policy.Capabilities[policy.CapabilityNetwork]
	switch {
	case !ok:
		return false
	case nw == policy.DecisionAllow:
		return true
	case nw == policy.DecisionAsk:
		rule := "capabilities.network: " + string(nw)
		for _, reason := range dec.Reasons {
			if reason.Rule == rule && reason.Decision == policy.DecisionAsk {
				return true
			}
		}
	}
	return false
}

// approve suspends the run on an approval form and applies the decision:
// a grant when the person chose allow_always, or the result the model sees
// when it was rejected (ok false): rejected's result for the person's
// feedback (toolSpec.Rejected: for exec, exit code -1 and the "Command
// rejected by user" stderr; for other tools, an error result). A timeout
// counts as a rejection with feedback saying so.
func (r *runState) approve(tc llm.ToolCall, key string, payload hitl.Payload, rejected func(feedback string) llm.ToolResult) (refused llm.ToolResult, ok bool) {
	raw, err := r.ctx.Suspend(key, payload, r.suspendOpts()...)
	d, err := hitl.DecisionFromResume(raw, err)
	if err != nil {
		return errorResult(tc.ID, "approval failed: %v", err), false
	}
	if !d.Approved {
		res := rejected(d.Feedback)
		res.ToolCallID = tc.ID
		return res, false
	}
	if d.AllowAlways {
		r.recordGrant(payload, d, key)
	}
	return llm.ToolResult{}, true
}

// grantScopes are where this run's allow-always grants live: its session
// (the run itself when it has none) and its agent.
func (r *runState) grantScopes() hitl.Scopes {
	s := hitl.Scopes{Session: r.ctx.Session(), Agent: r.cfg.ID}
	if s.Session == "" {
		s.Session = r.ctx.RunID()
	}
	return s
}

func (r *runState) suspendOpts() []polos.SuspendOption {
	if r.cfg.ApprovalTimeout > 0 {
		return []polos.SuspendOption{polos.SuspendTimeout(r.cfg.ApprovalTimeout)}
	}
	return nil
}

// approvalPayload adds the policy's reasons to a tool's approval form.
func approvalPayload(p hitl.Payload, dec PolicyRecord) hitl.Payload {
	if p.Form.Context == nil {
		p.Form.Context = map[string]any{}
	}
	p.Form.Context["policy"] = dec.Reasons
	return p
}

func (r *runState) recordGrant(p hitl.Payload, d hitl.Decision, key string) {
	g, err := hitl.GrantFromDecision(p, d, r.grantScopes(), r.ctx.RunID(), key, "", r.ctx.Now())
	if err != nil || g == nil {
		return
	}
	_, _ = polos.Step(r.ctx, "grant", func(c context.Context, _ string) (*hitl.Grant, error) {
		if r.deps.Grants != nil {
			if err := r.deps.Grants.Record(c, g); err != nil {
				return nil, err
			}
		}
		return g, nil
	})
	if r.granted == nil {
		r.granted = map[string]bool{}
	}
	kind, subject, _ := p.Subject()
	r.granted[string(kind)+":"+subject] = true
}

// decide evaluates the tool's policy check in a recorded step.
func (r *runState) decide(tool string, spec toolSpec, req any) PolicyRecord {
	rec, err := polos.Step(r.ctx, "policy:"+tool, func(c context.Context, _ string) (PolicyRecord, error) {
		chk := spec.PolicyCheck(r.pol, r.policyContext(), req)
		res, kind, subject := chk.Result, chk.Kind, chk.Subject
		rec := PolicyRecord{Result: res}
		// A grant names a command, not its env: an ask the exec env caused
		// is never lifted by one.
		if res.Decision == policy.DecisionAsk && kind != "" && !policy.AsksForEnv(res) {
			if r.granted[string(kind)+":"+subject] {
				rec.Decision, rec.Grant = policy.DecisionAllow, "this-run"
			} else if r.deps.Grants != nil {
				g, ok, err := r.deps.Grants.Match(c, r.grantScopes(), kind, subject)
				if err != nil {
					return rec, err
				}
				if ok && g != nil {
					rec.Decision, rec.Grant = policy.DecisionAllow, g.ID
				}
			}
		}
		return rec, nil
	}, polos.Idempotent())
	if err != nil {
		// The policy could not be evaluated (grant store down): be safe.
		return PolicyRecord{Result: policy.Result{Decision: policy.DecisionAsk, Reasons: []policy.Reason{{Rule: "error", Why: err.Error()}}}}
	}
	return rec
}

func (r *runState) policyContext() policy.Context {
	pc := policy.Context{Env: policy.Env(r.cfg.Sandbox.Env), Network: r.cfg.Sandbox.Spec.Network}
	switch r.cfg.Sandbox.Env {
	case "", sandbox.ProviderLocal:
		pc.Env, pc.Workspace = policy.EnvLocal, r.cfg.Sandbox.Spec.WorkspaceDir
		if r.sharedSandbox && r.sb.Workspace != "" {
			pc.Workspace = r.sb.Workspace // the flow's shared workspace
		}
	case sandbox.ProviderDocker:
		pc.Workspace = "/workspace"
	default:
		pc.Workspace = "/home/user"
	}
	return pc
}

func (r *runState) askUser(tc llm.ToolCall, q askUserRequest, key string) llm.ToolResult {
	raw, err := r.ctx.Suspend(key, hitl.AskUser(q.Question, q.Fields), r.suspendOpts()...)
	if err != nil {
		return errorResult(tc.ID, "no answer: %v", err)
	}
	return llm.ToolResult{ToolCallID: tc.ID, Content: string(raw)}
}

// execute runs a tool in the sandbox inside a recorded step. A sandbox
// that was lost is recreated (recorded) and the model is told its
// environment was reset.
func (r *runState) execute(tc llm.ToolCall, spec toolSpec, req any) llm.ToolResult {
	note := ""
	for attempt := 0; attempt < 2; attempt++ {
		info := r.ensureSandbox()
		out, err := polos.Step(r.ctx, "tool:"+tc.Name, func(c context.Context, _ string) (ToolOutcome, error) {
			return r.callSandbox(c, info, spec, req)
		})
		if err != nil {
			return errorResult(tc.ID, "%s failed: %v", tc.Name, err)
		}
		if out.Lost {
			r.resets++
			r.sb = nil
			note = "Note: the sandbox was lost and has been recreated; files and processes from earlier steps are gone.\n"
			_ = r.ctx.Annotate("sandbox_reset", map[string]string{"provider": info.Provider, "old_id": info.ID})
			continue
		}
		return llm.ToolResult{ToolCallID: tc.ID, Content: note + truncate(string(out.Output)), IsError: out.IsError}
	}
	return errorResult(tc.ID, "the sandbox was lost twice in a row; try again later")
}

func truncate(s string) string {
	if len(s) <= DefaultToolResultChars {
		return s
	}
	return s[:DefaultToolResultChars] + fmt.Sprintf("\n[... %d characters cut]", len(s)-DefaultToolResultChars)
}

func (r *runState) provider() (sandbox.Provider, error) {
	env := r.cfg.Sandbox.Env
	if r.sharedSandbox && r.sb != nil && r.sb.Provider != "" {
		env = r.sb.Provider
	}
	if env == "" {
		env = sandbox.ProviderLocal
	}
	return r.deps.Sandboxes(env)
}

// ensureSandbox creates the run's sandbox lazily, at the first tool call,
// in a recorded step, so a run resumed elsewhere reaches the same one.
func (r *runState) ensureSandbox() sandbox.Info {
	if r.sb != nil {
		return *r.sb
	}
	name := "sandbox:create"
	if r.resets > 0 {
		name = fmt.Sprintf("sandbox:recreate-%d", r.resets)
	}
	info, err := polos.Step(r.ctx, name, func(c context.Context, _ string) (sandbox.Info, error) {
		c = sandbox.WithRun(c, r.ctx.RunID())
		p, err := r.provider()
		if err != nil {
			return sandbox.Info{}, err
		}
		spec := r.cfg.Sandbox.Spec
		spec.Provider = p.Name()
		if spec.Owner == "" {
			spec.Owner = r.ctx.RunID()
		}
		sb, err := p.Create(c, spec)
		if err != nil {
			return sandbox.Info{}, err
		}
		return sb.Info(), nil
	})
	if err != nil {
		info = sandbox.Info{} // tool steps report the error
	}
	if info.Confinement == sandbox.ConfinementNone {
		_ = r.ctx.Annotate(events.AnnotationExecUnconfined, map[string]string{"provider": info.Provider, "sandbox": info.ID})
	}
	r.sb = &info
	return info
}

func (r *runState) destroySandbox() {
	if r.sb == nil || r.sb.ID == "" || r.sharedSandbox || r.cfg.Sandbox.Spec.Scope == "session" {
		return
	}
	info := *r.sb
	_, _ = polos.Step(r.ctx, "sandbox:destroy", func(c context.Context, _ string) (bool, error) {
		c = sandbox.WithRun(c, r.ctx.RunID())
		p, err := r.provider()
		if err != nil {
			return false, err
		}
		return true, p.Destroy(c, info)
	}, polos.Idempotent())
}

// callSandbox performs one tool call. Tool errors the model should see
// (file not found, edit mismatch) are results, not step failures; only
// infrastructure errors fail (and retry) the step.
func (r *runState) callSandbox(c context.Context, info sandbox.Info, tool toolSpec, req any) (ToolOutcome, error) {
	if info.ID == "" {
		return ToolOutcome{}, perr.New(sandbox.CodeUnavailable, "start a sandbox host (polosd --role sandbox)", "no sandbox could be created")
	}
	p, err := r.provider()
	if err != nil {
		return ToolOutcome{}, err
	}
	// Sandbox hosts serve a sandbox only to the run it was made for (or
	// shared with); an Info recorded before sealing must be re-created.
	c = sandbox.WithRun(c, r.ctx.RunID())
	spec := r.cfg.Sandbox.Spec
	spec.Provider = p.Name()
	sb, err := p.Open(c, info, spec)
	if err != nil {
		if sandbox.MustRecreate(err) {
			return ToolOutcome{Lost: true}, nil
		}
		return ToolOutcome{}, err
	}
	res, err := tool.Run(c, sb, req)
	if err != nil {
		switch {
		case sandbox.MustRecreate(err):
			return ToolOutcome{Lost: true}, nil
		case perr.Has(err, sandbox.CodeUnavailable), perr.Has(err, sandbox.CodeProvider):
			return ToolOutcome{}, err // retried
		}
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		return ToolOutcome{Output: b, IsError: true}, nil
	}
	b, _ := json.Marshal(res)
	return ToolOutcome{Output: b}, nil
}

// Cost estimates a call's cost in USD from public list prices per million
// tokens (input, output, cache read, cache write). Unknown models cost 0.
func Cost(model string, u llm.Usage) float64 {
	type price struct{ in, out, cacheRead, cacheWrite float64 }
	prices := map[string]price{
		"claude-sonnet-4-5": {3, 15, 0.30, 3.75},
		"claude-opus-4-1":   {15, 75, 1.50, 18.75},
		"claude-haiku-4-5":  {1, 5, 0.10, 1.25},
		"gpt-4o":            {2.5, 10, 1.25, 0},
		"gpt-4o-mini":       {0.15, 0.6, 0.075, 0},
	}
	p, ok := prices[model]
	if !ok {
		return 0
	}
	return (float64(u.InputTokens)*p.in + float64(u.OutputTokens)*p.out +
		float64(u.CacheReadTokens)*p.cacheRead + float64(u.CacheWriteTokens)*p.cacheWrite) / 1e6
}

// runCustom runs a Go tool in a recorded step, after an approval when the
// tool asks for one.
func (r *runState) runCustom(ct CustomTool, tc llm.ToolCall, key string) llm.ToolResult {
	if len(tc.Input) > 0 && !json.Valid(tc.Input) {
		return errorResult(tc.ID, "invalid arguments for %s: not valid JSON", tc.Name)
	}
	if ct.Ask && !r.grantedTool(tc.Name) {
		rejected := func(feedback string) llm.ToolResult { return rejectedTool(tc.Name, feedback) }
		if refused, ok := r.approve(tc, key, hitl.ToolApproval(tc.Name, tc.Input), rejected); !ok {
			return refused
		}
	}
	out, err := polos.Step(r.ctx, "tool:"+tc.Name, func(c context.Context, k string) (ToolOutcome, error) {
		res, err := ct.Run(c, k, tc.Input)
		if err != nil {
			b, _ := json.Marshal(map[string]string{"error": err.Error()})
			return ToolOutcome{Output: b, IsError: true}, nil
		}
		b, err := json.Marshal(res)
		if err != nil {
			return ToolOutcome{}, polos.NonRetryable(err)
		}
		return ToolOutcome{Output: b}, nil
	})
	if err != nil {
		return errorResult(tc.ID, "%s failed: %v", tc.Name, err)
	}
	return llm.ToolResult{ToolCallID: tc.ID, Content: truncate(string(out.Output)), IsError: out.IsError}
}

// grantedTool reports whether an allow-always grant covers a tool (a
// recorded step, so replays agree).
func (r *runState) grantedTool(name string) bool {
	if r.granted[string(hitl.KindTool)+":"+name] {
		return true
	}
	if r.deps.Grants == nil {
		return false
	}
	ok, _ := polos.Step(r.ctx, "grant-check:"+name, func(c context.Context, _ string) (bool, error) {
		_, found, err := r.deps.Grants.Match(c, r.grantScopes(), hitl.KindTool, name)
		return found, err
	}, polos.Idempotent())
	return ok
}

func (r *runState) checkGuardrails(out Output) error {
	for _, g := range r.cfg.Guardrails {
		if err := g(out); err != nil {
			return err
		}
	}
	return nil
}

// SessionStore keeps conversations across runs of a session.
type SessionStore interface {
	Load(ctx context.Context, agent, session string) ([]llm.Message, error)
	Save(ctx context.Context, agent, session string, msgs []llm.Message) error
}

// loadSession returns the conversation of earlier runs of this session (a
// recorded step).
func (r *runState) loadSession() []llm.Message {
	if r.deps.Sessions == nil || r.ctx.Session() == "" {
		return nil
	}
	msgs, err := polos.Step(r.ctx, "session:load", func(c context.Context, _ string) ([]llm.Message, error) {
		return r.deps.Sessions.Load(c, r.cfg.ID, r.ctx.Session())
	}, polos.Idempotent())
	if err != nil {
		return nil
	}
	return msgs
}

// saveSession stores the conversation for the session's next run, keeping
// the last conversation_history messages without splitting a tool call
// from its results.
func (r *runState) saveSession() {
	if r.deps.Sessions == nil || r.ctx.Session() == "" || r.msgs == nil {
		return
	}
	keep := trimHistory(*r.msgs, r.historyLimit())
	_, _ = polos.Step(r.ctx, "session:save", func(c context.Context, _ string) (bool, error) {
		return true, r.deps.Sessions.Save(c, r.cfg.ID, r.ctx.Session(), keep)
	}, polos.Idempotent())
}
