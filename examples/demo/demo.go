// Package demo is the offline Polos demo: a workflow driven by a scripted
// model (no API key, no network) that shows durable steps, a tool call in a
// sandbox reached over NATS, and an approval a person gives from the CLI.
//
// It is written only against the public API (package polos and the
// sandbox.Provider contract), the way user code would be.
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// Workflow is the name the demo is registered under.
const Workflow = "demo"

// DefaultTurnDelay is how long each scripted model turn "thinks", so the
// transcript looks like a real agent's. Input.DelayMs overrides it.
const DefaultTurnDelay = 300 * time.Millisecond

// ApprovalKey is the step key of the demo's approval.
const ApprovalKey = "approve-exec"

// DefaultCommand is the command the scripted model asks to run.
const DefaultCommand = "echo 'hello from the Polos sandbox' > hello.txt && cat hello.txt && ls"

// Deps are what the demo needs from the daemon.
type Deps struct {
	// Sandbox is the local provider as reached through the sandbox hosts
	// (dispatch.NewClient(nc, ns, "local")).
	Sandbox sandbox.Provider
	// WorkspaceRoot is the directory under which each run gets its own
	// workspace (<root>/<run ID>) on the sandbox host's machine.
	WorkspaceRoot string
}

// Input of the demo workflow; every field is optional.
type Input struct {
	Task    string `json:"task,omitempty"`
	Command string `json:"command,omitempty"`  // what the scripted model asks to run
	DelayMs int    `json:"delay_ms,omitempty"` // per model turn; 0 = DefaultTurnDelay, <0 = none
}

// UnmarshalJSON accepts the object form or a plain string (the task), so
// `polos run demo --input "make a file"` works.
func (in *Input) UnmarshalJSON(b []byte) error {
	var task string
	if json.Unmarshal(b, &task) == nil {
		*in = Input{Task: task}
		return nil
	}
	type plain Input
	return json.Unmarshal(b, (*plain)(in))
}

// Turn is one scripted model turn, recorded as an llm:<n> step.
type Turn struct {
	Text     string    `json:"text"`
	ToolCall *ToolCall `json:"tool_call,omitempty"`
}

// ToolCall is a tool the model asks for.
type ToolCall struct {
	Tool    string `json:"tool"`
	Command string `json:"command"`
}

// Decision is the resume data of the approval (the HITL convention).
type Decision struct {
	Approved    bool   `json:"approved"`
	Feedback    string `json:"feedback,omitempty"`
	AllowAlways bool   `json:"allow_always,omitempty"`
}

// Output is the demo's result.
type Output struct {
	Answer   string              `json:"answer"`
	Approved bool                `json:"approved"`
	Feedback string              `json:"feedback,omitempty"`
	Command  string              `json:"command"`
	Exec     *sandbox.ExecResult `json:"exec,omitempty"`
}

// Register adds the demo workflow to reg.
func Register(reg *polos.Registry, d Deps) {
	polos.Register(reg, Workflow, func(ctx polos.Context, in Input) (Output, error) { return run(ctx, d, in) })
}

func run(ctx polos.Context, d Deps, in Input) (Output, error) {
	if in.Task == "" {
		in.Task = "Create hello.txt in the workspace and show it."
	}
	if in.Command == "" {
		in.Command = DefaultCommand
	}
	delay := DefaultTurnDelay
	if in.DelayMs > 0 {
		delay = time.Duration(in.DelayMs) * time.Millisecond
	} else if in.DelayMs < 0 {
		delay = 0
	}
	out := Output{Command: in.Command}

	// Turn 1: the scripted model reads the task and asks to run a command.
	turn1, err := polos.Step(ctx, "llm:1", func(c context.Context, _ string) (Turn, error) {
		return think(c, delay, Turn{Text: "To " + lowerFirst(strings.TrimRight(in.Task, ". ")) + ", I will run a shell command in the sandbox.",
			ToolCall: &ToolCall{Tool: "exec", Command: in.Command}})
	})
	if err != nil {
		return out, err
	}

	info, err := polos.Step(ctx, "sandbox:create", func(c context.Context, _ string) (sandbox.Info, error) {
		sb, err := d.Sandbox.Create(c, sandbox.Spec{Provider: sandbox.ProviderLocal, Owner: ctx.RunID(), WorkspaceDir: filepath.Join(d.WorkspaceRoot, ctx.RunID())})
		if err != nil {
			return sandbox.Info{}, err
		}
		return sb.Info(), nil
	})
	if err != nil {
		return out, err
	}

	// The approval: the run holds nothing while it waits.
	dec, err := polos.Suspend[Decision](ctx, ApprovalKey, approvalForm(in.Task, turn1, info))
	if err != nil {
		return out, err
	}
	out.Approved, out.Feedback = dec.Approved, dec.Feedback

	var toolReport string
	if dec.Approved {
		res, err := polos.Step(ctx, "tool:exec:2", func(c context.Context, _ string) (sandbox.ExecResult, error) {
			sb, err := d.Sandbox.Open(c, info, sandbox.Spec{Provider: sandbox.ProviderLocal, Owner: ctx.RunID()})
			if err != nil {
				return sandbox.ExecResult{}, err
			}
			return sb.Exec(c, sandbox.ExecRequest{Command: turn1.ToolCall.Command, TimeoutSec: 60})
		})
		if err != nil {
			return out, err
		}
		out.Exec = &res
		toolReport = fmt.Sprintf("exit code %d, output: %s", res.ExitCode, strings.TrimSpace(res.Stdout))
	} else {
		toolReport = "the command was rejected"
		if dec.Feedback != "" {
			toolReport += " with feedback: " + dec.Feedback
		}
	}

	final, err := polos.Step(ctx, "llm:3", func(c context.Context, _ string) (Turn, error) {
		if !dec.Approved {
			return think(c, delay, Turn{Text: "I did not run anything: " + toolReport + "."})
		}
		return think(c, delay, Turn{Text: "Done: the command ran in the sandbox (" + toolReport + ")."})
	})
	if err != nil {
		return out, err
	}
	if _, err := polos.Step(ctx, "sandbox:destroy", func(c context.Context, _ string) (bool, error) {
		return true, d.Sandbox.Destroy(sandbox.WithRun(c, ctx.RunID()), info)
	}, polos.Idempotent()); err != nil {
		return out, err
	}
	out.Answer = final.Text
	return out, nil
}

// approvalForm is the HITL form for the exec tool call.
func approvalForm(task string, turn Turn, info sandbox.Info) map[string]any {
	return map[string]any{
		"_form": map[string]any{
			"title":       "Run a command in the sandbox?",
			"description": "The agent wants to run a shell command in its workspace.",
			"fields": []any{
				map[string]any{"key": "approved", "type": "boolean", "label": "Approve?", "required": true},
				map[string]any{"key": "feedback", "type": "textarea", "label": "Feedback"},
			},
			"context": map[string]any{"task": task, "command": turn.ToolCall.Command, "workspace": info.Workspace, "reason": turn.Text},
		},
		"_source": "exec_security",
		"_tool":   "exec",
	}
}

func think(ctx context.Context, d time.Duration, t Turn) (Turn, error) {
	if d <= 0 {
		return t, nil
	}
	select {
	case <-time.After(d):
		return t, nil
	case <-ctx.Done():
		return Turn{}, perr.Wrap(ctx.Err(), "CANCELLED", "", "model turn interrupted")
	}
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}
