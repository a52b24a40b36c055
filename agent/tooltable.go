package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/policy"
	"github.com/polos-run/polos/sandbox"
)

// CodeUnknownTool: a tool name that is neither built in nor a custom tool.
const CodeUnknownTool perr.Code = "AGENT_UNKNOWN_TOOL"

// builtinList is every built-in tool, in the order of AllTools. The loop
// has no per-tool code of its own: adding a tool is one entry here (ADR
// 0141).
var builtinList = []toolSpec{
	builtin(tool[sandbox.ExecRequest]{
		name:        ToolExec,
		description: "Run a shell command in the sandbox workspace. Returns exit_code, stdout, stderr.",
		example:     `{"command":"go test ./...","cwd":"src","env":{"CI":"1"},"timeout":60}`,
		describe:    map[string]string{"timeout": fmt.Sprintf("seconds, default %d", sandbox.DefaultExecTimeoutSec)},
		hide:        []string{"network"},
		check: func(x *sandbox.ExecRequest) error {
			x.Network = false // only the policy opens the network (execNetwork)
			return need("command", x.Command)
		},
		policy: func(p *policy.Policy, pc policy.Context, x sandbox.ExecRequest) policyCheck {
			return policyCheck{p.CheckExec(policy.Exec{Command: x.Command, Env: x.Env, Cwd: x.Cwd}, pc), hitl.KindExec, x.Command}
		},
		approval: func(x sandbox.ExecRequest) hitl.Payload { return hitl.ExecApproval(x.Command, x.Cwd, x.Env) },
		rejected: func(x sandbox.ExecRequest, feedback string) llm.ToolResult {
			b, _ := json.Marshal(hitl.RejectedExecResult(x.Command, feedback))
			return llm.ToolResult{Content: string(b)}
		},
		network: func(x sandbox.ExecRequest, on bool) sandbox.ExecRequest { x.Network = on; return x },
		run:     runs(sandbox.Sandbox.Exec),
	}),
	builtin(tool[sandbox.ReadRequest]{
		name:        ToolRead,
		description: "Read a text file (line based).",
		example:     `{"path":"README.md","offset":10,"limit":20}`,
		check:       func(x *sandbox.ReadRequest) error { return need("path", x.Path) },
		policy: func(p *policy.Policy, pc policy.Context, x sandbox.ReadRequest) policyCheck {
			return policyCheck{Result: p.CheckPath(policy.OpRead, x.Path, pc)}
		},
		run: runs(sandbox.Sandbox.Read),
	}),
	builtin(tool[sandbox.WriteRequest]{
		name:        ToolWrite,
		description: "Create or replace a file (parent directories are created).",
		example:     `{"path":"notes/todo.txt","content":"ship it\n"}`,
		check:       func(x *sandbox.WriteRequest) error { return need("path", x.Path) },
		policy: func(p *policy.Policy, pc policy.Context, x sandbox.WriteRequest) policyCheck {
			return policyCheck{p.CheckPath(policy.OpWrite, x.Path, pc), hitl.KindPath, hitl.PathSubject("write", x.Path)}
		},
		approval: func(x sandbox.WriteRequest) hitl.Payload { return hitl.PathApproval(x.Path, "write") },
		run:      runs(sandbox.Sandbox.Write),
	}),
	builtin(tool[sandbox.EditRequest]{
		name:        ToolEdit,
		description: "Replace old_text by new_text in a file; old_text must occur exactly once unless replace_all.",
		example:     `{"path":"main.go","old_text":"Hello","new_text":"Hi","replace_all":true}`,
		check: func(x *sandbox.EditRequest) error {
			if err := need("path", x.Path); err != nil {
				return err
			}
			return need("old_text", x.OldText)
		},
		policy: func(p *policy.Policy, pc policy.Context, x sandbox.EditRequest) policyCheck {
			return policyCheck{p.CheckPath(policy.OpEdit, x.Path, pc), hitl.KindPath, hitl.PathSubject("edit", x.Path)}
		},
		approval: func(x sandbox.EditRequest) hitl.Payload { return hitl.PathApproval(x.Path, "edit") },
		run:      runs(sandbox.Sandbox.Edit),
	}),
	builtin(tool[sandbox.GlobRequest]{
		name:        ToolGlob,
		description: "List files matching a glob pattern (** crosses directories).",
		example:     `{"pattern":"**/*.go","cwd":"src","ignore":["vendor/**"]}`,
		check:       func(x *sandbox.GlobRequest) error { return need("pattern", x.Pattern) },
		policy: func(p *policy.Policy, pc policy.Context, x sandbox.GlobRequest) policyCheck {
			return policyCheck{Result: p.CheckPath(policy.OpGlob, orDot(x.Cwd), pc)}
		},
		run: runs(sandbox.Sandbox.Glob),
	}),
	builtin(tool[sandbox.GrepRequest]{
		name:        ToolGrep,
		description: "Search file contents with a regular expression.",
		example:     `{"pattern":"func [A-Z]","cwd":"src","include":"**/*.go","max_results":50,"context_lines":2}`,
		check:       func(x *sandbox.GrepRequest) error { return need("pattern", x.Pattern) },
		policy: func(p *policy.Policy, pc policy.Context, x sandbox.GrepRequest) policyCheck {
			return policyCheck{Result: p.CheckPath(policy.OpGrep, orDot(x.Cwd), pc)}
		},
		run: runs(sandbox.Sandbox.Grep),
	}),
	builtin(tool[askUserRequest]{
		name:        ToolAskUser,
		description: "Ask the user a question and wait for the answer.",
		example:     `{"question":"Which branch should I release?","fields":[{"key":"branch","type":"text","label":"Branch"}]}`,
		check:       func(x *askUserRequest) error { return need("question", x.Question) },
		ask:         (*runState).askUser,
	}),
}

// builtinTools indexes builtinList by name.
var builtinTools = func() map[string]toolSpec {
	m := make(map[string]toolSpec, len(builtinList))
	for _, s := range builtinList {
		m[s.Def.Name] = s
	}
	return m
}()

func builtinNames() []string {
	names := make([]string, len(builtinList))
	for i, s := range builtinList {
		names[i] = s.Def.Name
	}
	return names
}

// lookupTool returns the built-in tool called name, or a CodeUnknownTool
// error naming the tools there are.
func lookupTool(name string) (toolSpec, error) {
	s, ok := builtinTools[name]
	if !ok {
		return toolSpec{}, perr.New(CodeUnknownTool, "use one of "+strings.Join(AllTools, ", ")+", or declare a custom tool (Config.CustomTools)",
			"unknown tool %q", name)
	}
	return s, nil
}

// toolSpec is everything the loop knows about one built-in tool, with the
// request type erased (built by builtin from a typed tool).
type toolSpec struct {
	// Def is what the model sees; Def.InputSchema is derived from the
	// request type.
	Def llm.Tool
	// Example is the arguments of a valid call (pinned by the tests).
	Example json.RawMessage
	// Parse decodes and checks a call's arguments into the request type;
	// its error is for the model to read.
	Parse func(raw json.RawMessage) (any, error)
	// PolicyCheck decides a parsed request (run inside the recorded policy
	// step). Nil only for a tool that asks a person (Ask): the person is
	// its gate.
	PolicyCheck func(p *policy.Policy, pc policy.Context, req any) policyCheck
	// Approval is the approval form when the policy asks.
	Approval func(req any, input json.RawMessage) hitl.Payload
	// Rejected is the result the model sees when the person says no
	// (without its ToolCallID).
	Rejected func(req any, feedback string) llm.ToolResult
	// Network, when set, gives an allowed request the network or not
	// (execNetwork); nil for tools that never reach it.
	Network func(req any, on bool) any
	// Run performs the request in the sandbox; its result is marshalled to
	// JSON for the model. Nil for a tool that asks a person.
	Run func(ctx context.Context, sb sandbox.Sandbox, req any) (any, error)
	// Ask answers the call with a question to the person instead of Run.
	Ask func(r *runState, tc llm.ToolCall, req any, key string) llm.ToolResult
}

// policyCheck is a policy decision and, when an allow-always grant may lift
// an ask, what such a grant names (Kind "" when none can).
type policyCheck struct {
	Result  policy.Result
	Kind    hitl.Kind
	Subject string
}

// tool is the typed form of a toolSpec: one entry of builtinList.
type tool[Req any] struct {
	name, description string
	example           string
	describe          map[string]string // descriptions of schema properties
	hide              []string          // request fields the model may not set (absent from the schema; check zeroes them)
	check             func(*Req) error  // required fields, after decoding
	policy            func(p *policy.Policy, pc policy.Context, req Req) policyCheck
	approval          func(req Req) hitl.Payload                    // nil: a tool_approval form of the raw arguments
	rejected          func(req Req, feedback string) llm.ToolResult // nil: an error result saying the person refused
	network           func(req Req, on bool) Req                    // see toolSpec.Network
	run               func(ctx context.Context, sb sandbox.Sandbox, req Req) (any, error)
	ask               func(r *runState, tc llm.ToolCall, req Req, key string) llm.ToolResult
}

// builtin erases t's request type.
func builtin[Req any](t tool[Req]) toolSpec {
	s := toolSpec{
		Def:     llm.Tool{Name: t.name, Description: t.description, InputSchema: inputSchema[Req](t.describe, t.hide)},
		Example: json.RawMessage(t.example),
		Parse: func(raw json.RawMessage) (any, error) {
			var x Req
			if err := decodeArgs(raw, &x); err != nil {
				return nil, err
			}
			if t.check != nil {
				if err := t.check(&x); err != nil {
					return x, err
				}
			}
			return x, nil
		},
		Approval: func(req any, input json.RawMessage) hitl.Payload {
			if t.approval == nil {
				return hitl.ToolApproval(t.name, input)
			}
			return t.approval(req.(Req))
		},
		Rejected: func(req any, feedback string) llm.ToolResult {
			if t.rejected == nil {
				return rejectedTool(t.name, feedback)
			}
			return t.rejected(req.(Req), feedback)
		},
	}
	if t.policy != nil {
		s.PolicyCheck = func(p *policy.Policy, pc policy.Context, req any) policyCheck { return t.policy(p, pc, req.(Req)) }
	}
	if t.network != nil {
		s.Network = func(req any, on bool) any { return t.network(req.(Req), on) }
	}
	if t.run != nil {
		s.Run = func(ctx context.Context, sb sandbox.Sandbox, req any) (any, error) { return t.run(ctx, sb, req.(Req)) }
	}
	if t.ask != nil {
		s.Ask = func(r *runState, tc llm.ToolCall, req any, key string) llm.ToolResult {
			return t.ask(r, tc, req.(Req), key)
		}
	}
	return s
}

// runs adapts a sandbox.Sandbox method expression (sandbox.Sandbox.Exec)
// to tool.run.
func runs[Req, Res any](m func(sandbox.Sandbox, context.Context, Req) (Res, error)) func(context.Context, sandbox.Sandbox, Req) (any, error) {
	return func(ctx context.Context, sb sandbox.Sandbox, req Req) (any, error) {
		res, err := m(sb, ctx, req)
		if err != nil {
			return nil, err
		}
		return res, nil
	}
}

// decodeArgs decodes a call's arguments (none means {}).
func decodeArgs(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("arguments are not a valid JSON object: %v", err)
	}
	return nil
}

func need(field, v string) error {
	if v == "" {
		return fmt.Errorf("%q is required", field)
	}
	return nil
}

// rejectedTool is the error result of a tool call the person refused.
func rejectedTool(name, feedback string) llm.ToolResult {
	b, _ := json.Marshal(hitl.RejectedToolResult(name, feedback))
	return llm.ToolResult{Content: string(b), IsError: true}
}

type askUserRequest struct {
	Question string       `json:"question"`
	Fields   []hitl.Field `json:"fields,omitempty"`
}

func orDot(s string) string {
	if s == "" {
		return "."
	}
	return s
}
