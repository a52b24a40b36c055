package agent

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// provider is the sandbox provider of the run: the shared sandbox's, else
// the configured env's (local when none).
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
