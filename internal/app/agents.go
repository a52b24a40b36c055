package app

import (
	"context"
	"encoding/json"
	"path/filepath"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/agent"
	"github.com/polos-run/polos/config"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/llm"
	_ "github.com/polos-run/polos/llm/providers" // link anthropic, openai, scripted
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/policy"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/ratelimit"
	"github.com/polos-run/polos/sandbox"
)

// agentDeps are the dependencies every agent of the daemon shares.
func agentDeps(cfg *config.Config, deps Deps) (agent.Deps, error) {
	grants, err := hitl.NewGrants(context.Background(), deps.JS, deps.Namespace)
	if err != nil {
		return agent.Deps{}, err
	}
	var rules ratelimit.RateRules
	if cfg != nil {
		rules = cfg.RateLimits
	}
	return agent.Deps{
		Sandboxes: func(env string) (sandbox.Provider, error) {
			p, ok := deps.Sandboxes[env]
			if !ok {
				return nil, perr.New(sandbox.CodeBadRequest, "use local, docker or e2b", "unknown sandbox env %q", env)
			}
			return p, nil
		},
		Grants:   grants,
		Limiter:  ratelimit.NewBucket(deps.JS, rules),
		Budget:   ratelimit.NewBudget(deps.JS, deps.Namespace),
		Sessions: agent.KVSessions{JS: deps.JS, Namespace: deps.Namespace},
		Stream: func(runID string, d agent.StreamDelta) {
			b, _ := json.Marshal(d)
			_ = deps.NC.Publish(protocol.DeltaSubject(deps.Namespace, runID), b)
		},
	}, nil
}

// registerAgents adds one workflow per agent of cfg and returns what to
// advertise about them.
func registerAgents(reg *polos.Registry, cfg *config.Config, deps Deps, ad agent.Deps) ([]protocol.WorkflowMeta, error) {
	if cfg == nil || len(cfg.Agents) == 0 {
		return nil, nil
	}
	var metas []protocol.WorkflowMeta
	for _, a := range cfg.Agents {
		ac, err := AgentConfig(cfg, a, deps.WorkspaceRoot)
		if err != nil {
			return nil, err
		}
		if err := agent.Register(reg, ac, ad); err != nil {
			return nil, perr.Wrap(err, config.CodeInvalid, "fix the agent in "+cfg.Path, "%s:%d: agent %s", cfg.Path, a.Line, a.ID)
		}
		m := protocol.WorkflowMeta{Name: a.ID, Queue: ac.Queue, Kind: "agent"}
		if a.Queue != nil {
			m.ConcurrencyLimit = a.Queue.ConcurrencyLimit
		}
		metas = append(metas, m)
	}
	return metas, nil
}

// AgentConfig turns a polos.yaml agent into an agent.Config. The policy is
// the agent's `policy:` section combined with `sandbox.exec`,
// `sandbox.file_approval` and `sandbox.local.path_restriction`.
func AgentConfig(cfg *config.Config, a config.Agent, workspaceRoot string) (agent.Config, error) {
	ac := agent.Config{
		ID:                  a.ID,
		Provider:            llm.ProviderConfig{Provider: a.Provider, Model: a.Model, BaseURL: a.BaseURL, Script: a.Script},
		SystemPrompt:        a.SystemPrompt,
		Tools:               a.Tools,
		ConversationHistory: a.ConversationHistory,
	}
	for _, sc := range a.StopConditions {
		if sc.MaxSteps > 0 {
			ac.MaxSteps = sc.MaxSteps
		}
		if sc.MaxTokens > 0 {
			ac.MaxTotalTokens = int64(sc.MaxTokens)
		}
		if sc.Executed != "" {
			ac.StopAfterTool = sc.Executed
		}
	}
	if a.Queue != nil {
		ac.Queue = a.Queue.Name
	}
	if a.OutputSchema.Kind != 0 {
		var schema any
		if err := a.OutputSchema.Decode(&schema); err != nil {
			return ac, perr.Wrap(err, config.CodeInvalid, "write output_schema as a JSON Schema object", "%s:%d: output_schema of agent %s", cfg.Path, a.OutputSchema.Line, a.ID)
		}
		b, err := json.Marshal(schema)
		if err != nil {
			return ac, perr.Wrap(err, config.CodeInvalid, "use string keys only", "%s:%d: output_schema of agent %s", cfg.Path, a.OutputSchema.Line, a.ID)
		}
		ac.OutputSchema = b
	}
	if a.HasPolicy() {
		if err := a.Policy.Decode(&ac.Policy); err != nil {
			return ac, perr.Wrap(err, config.CodeInvalid, "see docs/policy.md", "%s:%d: policy of agent %s", cfg.Path, a.Policy.Line, a.ID)
		}
	}
	sb := a.Sandbox
	if sb == nil {
		sb = &config.Sandbox{Env: sandbox.ProviderLocal}
	}
	ac.Sandbox.Env = sb.Env
	if ac.Sandbox.Env == "" {
		ac.Sandbox.Env = sandbox.ProviderLocal
	}
	ac.Sandbox.Spec.Scope = sb.Scope
	if sb.Exec != nil {
		ac.Policy.Exec = &policy.ExecConfig{Security: sb.Exec.Security, Allowlist: sb.Exec.Allowlist}
	}
	if sb.FileApproval != "" {
		ac.Policy.FileApproval = sb.FileApproval
	}
	switch ac.Sandbox.Env {
	case sandbox.ProviderLocal:
		ws := filepath.Join(workspaceRoot, a.ID)
		if sb.Local != nil {
			if sb.Local.Cwd != "" {
				ws = sb.Local.Cwd
			}
			ac.Policy.PathRestriction = sb.Local.PathRestriction
		}
		ac.Sandbox.Spec.WorkspaceDir = ws
	case sandbox.ProviderDocker:
		if d := sb.Docker; d != nil {
			ac.Sandbox.Spec.Image, ac.Sandbox.Spec.WorkspaceDir = d.Image, d.WorkspaceDir
			ac.Sandbox.Spec.Network, ac.Sandbox.Spec.Memory = d.Network, d.Memory
			ac.Sandbox.Spec.CPUs, ac.Sandbox.Spec.PidsLimit = d.CPUs, d.PidsLimit
		}
	case sandbox.ProviderE2B:
		if e := sb.E2B; e != nil {
			ac.Sandbox.Spec.Template, ac.Sandbox.Spec.TimeoutSec = e.Template, e.TimeoutSec
		}
	}
	return ac, nil
}
