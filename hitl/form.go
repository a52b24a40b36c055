// Package hitl is the human-in-the-loop core of Polos: the forms a run
// suspends with, strict validation of the answers, the decisions the agent
// loop applies, allow-always grants, and single-use approval tokens.
//
// Everything here except Grants is pure: no I/O, no clocks unless passed in.
//
// A suspend payload has this shape (a public contract; UIs and clients read
// it from the `suspended` event and from `polos status`):
//
//	{"_form": {"title": ..., "description": ..., "fields": [...], "context": {...}},
//	 "_source": "exec_security" | "tool_approval" | "path_approval" | "ask_user",
//	 "_tool": "exec"}
package hitl

import (
	"encoding/json"
	"path"
)

// Source says why a run suspended.
type Source string

// Suspend sources.
const (
	SourceExec     Source = "exec_security" // a shell command needs approval
	SourceTool     Source = "tool_approval" // a tool call needs approval
	SourcePath     Source = "path_approval" // file access outside the allowed paths
	SourceAskUser  Source = "ask_user"      // the agent asks the person a question
	SourceOperator Source = "operator"      // run parked on non-determinism (written by events)
)

// FieldType is the type of a form field.
type FieldType string

// Field types. Each one accepts exactly one JSON type (see Validate).
const (
	FieldBoolean  FieldType = "boolean"  // JSON true/false
	FieldSelect   FieldType = "select"   // JSON string, one of Options
	FieldTextarea FieldType = "textarea" // JSON string
	FieldNumber   FieldType = "number"   // JSON number
	FieldText     FieldType = "text"     // JSON string
	FieldEmail    FieldType = "email"    // JSON string holding one bare address
	FieldURL      FieldType = "url"      // JSON string holding an absolute http(s) URL
)

// Reserved field keys of approval forms (see Decision).
const (
	KeyApproved    = "approved"
	KeyFeedback    = "feedback"
	KeyAllowAlways = "allow_always"
	KeyPattern     = "pattern"
	KeyScope       = "scope"
)

// Option is a choice of a select field. In JSON it is either a bare string
// (value and label equal) or {"value": ..., "label": ...}.
type Option struct {
	Value string `json:"value"`
	Label string `json:"label,omitempty"`
}

// UnmarshalJSON accepts "v" or {"value":"v","label":"L"}.
func (o *Option) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*o = Option{Value: s}
		return nil
	}
	type plain Option
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*o = Option(p)
	return nil
}

// Field is one input of a form.
type Field struct {
	Key         string          `json:"key"`
	Type        FieldType       `json:"type"`
	Label       string          `json:"label,omitempty"`
	Description string          `json:"description,omitempty"`
	Required    bool            `json:"required,omitempty"`
	Default     json.RawMessage `json:"default,omitempty"` // pre-fills a UI; never stands in for a required answer
	Options     []Option        `json:"options,omitempty"` // select only
}

// Form is what a person sees and fills in.
type Form struct {
	Title       string         `json:"title"`
	Description string         `json:"description,omitempty"`
	Fields      []Field        `json:"fields"`
	Context     map[string]any `json:"context,omitempty"` // what is being decided: command/cwd/env, tool/input, path/operation
}

// Payload is the suspend payload.
type Payload struct {
	Form   Form   `json:"_form"`
	Source Source `json:"_source,omitempty"`
	Tool   string `json:"_tool,omitempty"`
}

// ParsePayload decodes a suspend payload. ok is false when raw is not an
// object with a `_form` (a plain Suspend without a form).
func ParsePayload(raw json.RawMessage) (p Payload, ok bool, err error) {
	var probe struct {
		Form json.RawMessage `json:"_form"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &probe) != nil || len(probe.Form) == 0 || string(probe.Form) == "null" {
		return Payload{}, false, nil
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return Payload{}, true, badForm(err)
	}
	return p, true, nil
}

// IsBooleanApproval reports whether the form is a plain yes/no approval: it
// has a required boolean `approved` field and every other field is optional.
// Channels offer one-click Approve / Reject buttons only for these.
func (f Form) IsBooleanApproval() bool {
	seen := false
	for _, fl := range f.Fields {
		switch {
		case fl.Key == KeyApproved && fl.Type == FieldBoolean && fl.Required:
			seen = true
		case fl.Required:
			return false
		}
	}
	return seen
}

// Field returns the field with key, if any.
func (f Form) Field(key string) (Field, bool) {
	for _, fl := range f.Fields {
		if fl.Key == key {
			return fl, true
		}
	}
	return Field{}, false
}

// approvalFields are the fields every approval form has. withGrant adds the
// allow-always choice; grantLabel says exactly what would be allowed;
// withPattern lets the person widen it to a pattern of their choosing.
func approvalFields(grantLabel string, withPattern bool) []Field {
	fs := []Field{
		{Key: KeyApproved, Type: FieldBoolean, Label: "Approve", Required: true},
		{Key: KeyFeedback, Type: FieldTextarea, Label: "Feedback for the agent", Description: "Sent to the agent when you reject, so it can adapt."},
		{Key: KeyAllowAlways, Type: FieldBoolean, Label: grantLabel, Default: json.RawMessage("false")},
	}
	if withPattern {
		fs = append(fs, Field{Key: KeyPattern, Type: FieldText, Label: "Or allow everything matching this pattern",
			Description: "Optional. `*` matches any run of characters except shell operators. Empty: only the exact request above."})
	}
	return append(fs, Field{Key: KeyScope, Type: FieldSelect, Label: "Remember for",
		Options: []Option{{Value: string(ScopeSession), Label: "this session"}, {Value: string(ScopeAgent), Label: "this agent (all sessions)"}},
		Default: json.RawMessage(`"session"`)})
}

// ExecApproval is the form for a shell command that needs approval.
// env is shown to the person; pass only what the command gets.
func ExecApproval(command, cwd string, env map[string]string) Payload {
	ctx := map[string]any{"command": command, "cwd": cwd}
	if len(env) > 0 {
		ctx["env"] = env // encoding/json writes map keys sorted
	}
	return Payload{
		Form: Form{
			Title:       "Run this command?",
			Description: "The agent wants to run a shell command.",
			Fields:      approvalFields("Always allow this exact command", true),
			Context:     ctx,
		},
		Source: SourceExec,
		Tool:   "exec",
	}
}

// ToolApproval is the form for a tool call that needs approval. Allow
// always here allows the tool (any input): the label says so.
func ToolApproval(tool string, input json.RawMessage) Payload {
	var in any = json.RawMessage("null")
	if len(input) > 0 && json.Valid(input) {
		in = input
	}
	return Payload{
		Form: Form{
			Title:       "Use the " + tool + " tool?",
			Description: "The agent wants to call a tool.",
			Fields:      approvalFields("Always allow the "+tool+" tool", false),
			Context:     map[string]any{"tool": tool, "input": in},
		},
		Source: SourceTool,
		Tool:   tool,
	}
}

// PathApproval is the form for file access (operation: read, write, edit,
// glob, grep...) outside the allowed paths.
func PathApproval(p, operation string) Payload {
	return Payload{
		Form: Form{
			Title:       "Allow " + operation + " on " + p + "?",
			Description: "The agent wants to " + operation + " " + p + "; the policy asks before this file operation.",
			Fields:      approvalFields("Always allow "+operation+" on this exact path", true),
			Context:     map[string]any{"path": p, "operation": operation},
		},
		Source: SourcePath,
		Tool:   operation,
	}
}

// AskUser is the form of the ask_user tool: the agent's question and the
// fields it wants answered. With no fields the person gets one required
// text answer (key "answer").
func AskUser(question string, fields []Field) Payload {
	if len(fields) == 0 {
		fields = []Field{{Key: "answer", Type: FieldTextarea, Label: "Answer", Required: true}}
	}
	return Payload{
		Form:   Form{Title: "The agent asks", Description: question, Fields: fields, Context: map[string]any{"question": question}},
		Source: SourceAskUser,
		Tool:   "ask_user",
	}
}

// Subject returns what an allow-always grant from this payload would cover:
// the kind and the exact subject (command; tool name; "operation:path").
// ok is false for sources that cannot be granted (ask_user, operator).
func (p Payload) Subject() (Kind, string, bool) {
	str := func(k string) string { s, _ := p.Form.Context[k].(string); return s }
	switch p.Source {
	case SourceExec:
		return KindExec, str("command"), str("command") != ""
	case SourceTool:
		return KindTool, str("tool"), str("tool") != ""
	case SourcePath:
		if str("path") == "" || str("operation") == "" {
			return "", "", false
		}
		return KindPath, PathSubject(str("operation"), str("path")), true
	}
	return "", "", false
}

// PathSubject is the grant subject of a path access: "operation:cleanpath".
func PathSubject(operation, p string) string { return operation + ":" + path.Clean(p) }
