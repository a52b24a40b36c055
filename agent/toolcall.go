package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/policy"
	"github.com/polos-run/polos/sandbox"
)

// errorResult is a tool result the model reads as an error.
func errorResult(id, format string, args ...any) llm.ToolResult {
	return llm.ToolResult{ToolCallID: id, Content: fmt.Sprintf(format, args...), IsError: true}
}

// allowed reports whether the agent offers the tool called name.
func (r *runState) allowed(name string) bool {
	for _, t := range r.cfg.tools() {
		if t == name {
			return true
		}
	}
	return false
}

// AnnotationToolResult is the annotation that records what the agent was
// told for each tool call (the history then shows it even when no tool
// step ran: a rejection and its feedback, a policy denial, an unknown tool,
// malformed arguments, a hook's refusal). Attributes: tool, call_id, turn,
// is_error, and either step (the tool step whose recorded outcome the
// model read, truncated to DefaultToolResultChars) or content (the text
// itself, cut to MaxAnnotatedResultChars).
const AnnotationToolResult = "tool_result"

// MaxAnnotatedResultChars bounds the text a tool_result annotation keeps.
const MaxAnnotatedResultChars = 8 << 10

// runTool answers one tool call. Unknown tools and malformed arguments get
// an error result the model can read (never a provider error next turn).
// Every result is recorded in the history (AnnotationToolResult).
func (r *runState) runTool(turn, i int, tc llm.ToolCall) llm.ToolResult {
	r.fromStep = ""
	res := r.answerTool(turn, i, tc)
	a := map[string]string{"tool": tc.Name, "call_id": tc.ID, "turn": strconv.Itoa(turn), "is_error": strconv.FormatBool(res.IsError)}
	if r.fromStep != "" {
		a["step"] = r.fromStep
	} else {
		a["content"] = cut(res.Content, MaxAnnotatedResultChars)
	}
	_ = r.ctx.Annotate(AnnotationToolResult, a)
	return res
}

func (r *runState) answerTool(turn, i int, tc llm.ToolCall) llm.ToolResult {
	if h := r.cfg.Hooks.OnToolStart; h != nil {
		if err := h(r.ctx, tc); err != nil {
			return errorResult(tc.ID, "%s refused: %v", tc.Name, err)
		}
	}
	res := r.runToolInner(turn, i, tc)
	if h := r.cfg.Hooks.OnToolEnd; h != nil {
		if err := h(r.ctx, tc, res); err != nil {
			r.fromStep = ""
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
		if note == "" {
			r.fromStep = "tool:" + tc.Name
		}
		return llm.ToolResult{ToolCallID: tc.ID, Content: note + truncate(string(out.Output)), IsError: out.IsError}
	}
	return errorResult(tc.ID, "the sandbox was lost twice in a row; try again later")
}

func truncate(s string) string { return cut(s, DefaultToolResultChars) }

// cut keeps the first n bytes of s and says how much it left out.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("\n[... %d characters cut]", len(s)-n)
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
	r.fromStep = "tool:" + tc.Name
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
