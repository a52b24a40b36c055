package hitl

import (
	"encoding/json"
	"errors"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/replay"
	"github.com/polos-run/polos/sandbox"
)

// Decision is a person's answer to an approval form.
type Decision struct {
	// Approved is true only when the resume data held the JSON boolean true.
	Approved bool `json:"approved"`
	// Feedback is free text for the agent (usually why it was rejected).
	Feedback string `json:"feedback,omitempty"`
	// AllowAlways asks for a grant so the same request runs without asking.
	AllowAlways bool `json:"allow_always,omitempty"`
	// Pattern, when set with AllowAlways, is the wider pattern the person
	// chose to allow instead of the exact request.
	Pattern string `json:"pattern,omitempty"`
	// Scope of the grant: ScopeSession (default) or ScopeAgent.
	Scope Scope `json:"scope,omitempty"`
	// TimedOut is set by DecisionFromResume when nobody decided in time.
	TimedOut bool `json:"timed_out,omitempty"`
	// Data is the whole resume data (ask_user answers live here).
	Data json.RawMessage `json:"-"`
}

// ParseDecision reads resume data strictly: approved and allow_always must
// be JSON booleans when present (the string "true" is an error, never an
// approval), feedback and pattern strings, scope "session" or "agent".
// Absent approved means not approved.
func ParseDecision(data json.RawMessage) (Decision, error) {
	obj, err := decodeObject(data)
	if err != nil {
		return Decision{}, err
	}
	if err := checkReserved(obj, Form{}); err != nil {
		return Decision{}, err
	}
	var d Decision
	if len(obj) > 0 && json.Unmarshal(data, &d) != nil {
		return Decision{}, perr.New(CodeBadInput, `send {"approved": true|false, "feedback": "..."}`, "cannot read the decision %s", describe(data))
	}
	d.TimedOut = false // only DecisionFromResume sets it
	d.Data = data
	switch d.Scope {
	case "":
		d.Scope = ScopeSession
	case ScopeSession, ScopeAgent:
	default:
		return Decision{}, perr.New(CodeBadOption, `use "session" or "agent"`, "scope %q is not a grant scope", d.Scope)
	}
	return d, nil
}

// TimeoutFeedback is the feedback the agent sees when nobody decided in time.
const TimeoutFeedback = "No decision before the approval timed out; treat it as rejected and do not retry the same request without asking."

// DecisionFromResume turns what Suspend returned into a Decision. A
// suspend timeout (replay.CodeWaitTimeout) becomes a rejection with
// TimedOut set and TimeoutFeedback, the defined branch for expiry; any
// other error is returned as is.
func DecisionFromResume(data json.RawMessage, err error) (Decision, error) {
	if err != nil {
		if perr.Has(err, replay.CodeWaitTimeout) || errors.Is(err, &perr.Error{Code: replay.CodeWaitTimeout}) {
			return Decision{Feedback: TimeoutFeedback, TimedOut: true, Scope: ScopeSession}, nil
		}
		return Decision{}, err
	}
	return ParseDecision(data)
}

// RejectedExecResult is what the agent sees when a person rejects a
// command: exit code -1 and stderr
//
//	Command rejected by user: <command>
//	User feedback: <feedback>
//
// (the second line only when there is feedback).
func RejectedExecResult(command, feedback string) sandbox.ExecResult {
	stderr := "Command rejected by user: " + command
	if feedback != "" {
		stderr += "\nUser feedback: " + feedback
	}
	return sandbox.ExecResult{ExitCode: -1, Stderr: stderr}
}

// ToolRejection is the error result the model sees when a tool call was
// rejected.
type ToolRejection struct {
	Error    string `json:"error"`
	Tool     string `json:"tool"`
	Feedback string `json:"feedback,omitempty"`
	Rejected bool   `json:"rejected"`
}

// RejectedToolResult is the tool result for a rejected tool call (marshal
// it as the tool's output, marked as an error).
func RejectedToolResult(tool, feedback string) ToolRejection {
	msg := "Tool call rejected by user: " + tool
	if feedback != "" {
		msg += "\nUser feedback: " + feedback
	}
	return ToolRejection{Error: msg, Tool: tool, Feedback: feedback, Rejected: true}
}
