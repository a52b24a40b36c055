// Package multiagent is seed example 4: a release flow in which a planner,
// a coder and a tester (three agents, each a child run) work in ONE shared
// sandbox, and nothing is published before a person approves.
//
// It runs offline with scripted models (no API key); with a provider and
// an API key in the agent configs it runs live. Written against the public
// API: polos workflows, agent.Register, sandbox.Provider, hitl forms.
package multiagent

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/agent"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/scripted"
	"github.com/polos-run/polos/policy"
	"github.com/polos-run/polos/sandbox"
)

// Names of the flow and its agents.
const (
	Workflow   = "release_flow"
	Planner    = "release_planner"
	Coder      = "release_coder"
	Tester     = "release_tester"
	PublishKey = "approve-publish"
)

var scripts = map[string]string{
	Planner: `
- text: "Plan: 1) write add.js exporting add(a, b); 2) write add.test.js that checks add(2, 3) === 5; 3) run node add.test.js."
`,
	Coder: `
- tool_calls:
    - {name: write, input: {path: add.js, content: "exports.add = (a, b) => a + b;\n"}}
    - {name: write, input: {path: add.test.js, content: "const {add} = require('./add.js');\nif (add(2, 3) !== 5) { console.error('FAIL'); process.exit(1); }\nconsole.log('ok: add(2, 3) = 5');\n"}}
- text: Wrote add.js and add.test.js.
`,
	Tester: `
- tool_calls:
    - {name: exec, input: {command: node add.test.js}}
- text: "Tests pass: ok: add(2, 3) = 5"
`,
}

// Register adds the three agents and the flow. deps are the agents'
// dependencies (sandboxes over NATS, grants); workspaceRoot is where the
// flow's shared local sandbox lives (one directory per run).
func Register(reg *polos.Registry, deps agent.Deps, workspaceRoot string) error {
	offline := deps
	offline.Models = func(pc llm.ProviderConfig) (llm.Model, error) {
		return scripted.New(scripted.MustParse(pc.Script, scripts[pc.Script])), nil
	}
	allow := policy.Decision("allow")
	cfgs := []agent.Config{
		{ID: Planner, SystemPrompt: "You plan small coding tasks.", Tools: []string{}},
		{ID: Coder, SystemPrompt: "You write code in the shared workspace.", Tools: []string{agent.ToolWrite, agent.ToolRead, agent.ToolEdit},
			Policy: policy.Config{FileApproval: "none"}},
		{ID: Tester, SystemPrompt: "You run the tests.", Tools: []string{agent.ToolExec, agent.ToolRead},
			Policy: policy.Config{Commands: policy.CommandRules{Allow: []string{"node *"}}, Default: "ask", Capabilities: map[string]policy.Decision{"fileWrite": allow}}},
	}
	for _, c := range cfgs {
		c.Provider = llm.ProviderConfig{Provider: "scripted", Model: "scripted", Script: c.ID}
		c.Sandbox = agent.SandboxConfig{Env: sandbox.ProviderLocal}
		if err := agent.Register(reg, c, offline); err != nil {
			return err
		}
	}
	polos.Register(reg, Workflow, func(ctx polos.Context, task string) (map[string]string, error) {
		return flow(ctx, task, deps, workspaceRoot)
	})
	return nil
}

func flow(ctx polos.Context, task string, deps agent.Deps, workspaceRoot string) (map[string]string, error) {
	provider, err := deps.Sandboxes(sandbox.ProviderLocal)
	if err != nil {
		return nil, err
	}
	spec := sandbox.Spec{Provider: sandbox.ProviderLocal, Owner: ctx.RunID(), WorkspaceDir: filepath.Join(workspaceRoot, ctx.RunID())}
	info, err := polos.Step(ctx, "sandbox:create", func(c context.Context, _ string) (sandbox.Info, error) {
		sb, err := provider.Create(c, spec)
		if err != nil {
			return sandbox.Info{}, err
		}
		return sb.Info(), nil
	})
	if err != nil {
		return nil, err
	}
	// Each child run gets its own Info for the one sandbox: the sandbox
	// host serves a sandbox only to the run it was made for, or shared with.
	ask := func(who, prompt string) (agent.Output, error) {
		child := ctx.RunID() + "-" + who
		shared, err := polos.Step(ctx, "sandbox:share:"+who, func(c context.Context, _ string) (sandbox.Info, error) {
			return sandbox.Share(sandbox.WithRun(c, ctx.RunID()), provider, info, child)
		})
		if err != nil {
			return agent.Output{}, err
		}
		return polos.InvokeAndWait[agent.Output](ctx, who, agent.Input{Prompt: prompt, Sandbox: &shared}, polos.ChildID(child))
	}
	plan, err := ask(Planner, task)
	if err != nil {
		return nil, err
	}
	code, err := ask(Coder, plan.Text)
	if err != nil {
		return nil, err
	}
	test, err := ask(Tester, "Run the tests for: "+code.Text)
	if err != nil {
		return nil, err
	}
	form := hitl.ToolApproval("publish", []byte(fmt.Sprintf(`{"workspace":%q,"tests":%q}`, info.Workspace, test.Text)))
	form.Form.Title = "Publish this release?"
	raw, err := ctx.Suspend(PublishKey, form)
	d, err := hitl.DecisionFromResume(raw, err)
	if err != nil {
		return nil, err
	}
	result := map[string]string{"plan": plan.Text, "code": code.Text, "tests": test.Text}
	if d.Approved {
		_, err = polos.Step(ctx, "publish", func(c context.Context, key string) (bool, error) {
			sb, err := provider.Open(c, info, spec)
			if err != nil {
				return false, err
			}
			_, err = sb.Write(c, sandbox.WriteRequest{Path: "PUBLISHED", Content: "published under idempotency key " + key + "\n"})
			return err == nil, err
		})
		result["published"] = fmt.Sprint(err == nil)
	} else {
		result["published"] = "false"
		result["feedback"] = d.Feedback
	}
	_, _ = polos.Step(ctx, "sandbox:destroy", func(c context.Context, _ string) (bool, error) {
		return true, provider.Destroy(sandbox.WithRun(c, ctx.RunID()), info)
	}, polos.Idempotent())
	return result, err
}
