package protocol

import (
	"encoding/json"
	"errors"

	"github.com/polos-run/polos/perr"
)

// Control operations: the last token of polos.<ns>.ctl.<identity>.<op>.
// Operators (protocol.RoleOperator) change runs only through these
// requests, served by polosd's control service, which performs the writes
// with its own identity and records the requester's identity (read from
// the subject, which the server's permissions bind to the credential) as
// who decided.
const (
	CtlWhoAmI      = "whoami"        // -> WhoAmIReply
	CtlStart       = "start"         // StartRequest -> StartReply
	CtlResume      = "resume"        // ResumeRequest -> run summary (JSON of events.Summary)
	CtlCancel      = "cancel"        // RunRequest -> {}
	CtlPublish     = "publish"       // PublishRequest -> {}
	CtlList        = "list"          // ListRequest -> ListReply
	CtlGrants      = "grants"        // GrantsRequest -> []hitl.Grant
	CtlRevokeGrant = "revoke_grant"  // RevokeGrantRequest -> {}
	CtlBudgets     = "budgets"       // BudgetRequest -> []ratelimit.BudgetState
	CtlSetBudget   = "set_budget"    // SetBudgetRequest -> SetBudgetReply
	CtlRebuild     = "rebuild_index" // {} -> index.Report: recompute the run index from the histories
)

// MaxControlRequest bounds a control request's payload.
const MaxControlRequest = 4 << 20

// ControlReply is the payload of every control reply: a result or an error.
type ControlReply struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *WireError      `json:"error,omitempty"`
}

// WhoAmIReply says who the service took the requester for.
type WhoAmIReply struct {
	Namespace string `json:"namespace"`
	Identity  string `json:"identity"`
	DecidedBy string `json:"decided_by"` // what a decision by this identity records
}

// StartRequest starts a run (client.StartOptions on the wire).
type StartRequest struct {
	Workflow         string          `json:"workflow"`
	Input            json.RawMessage `json:"input,omitempty"`
	ID               string          `json:"id,omitempty"`
	Queue            string          `json:"queue,omitempty"`
	Session          string          `json:"session,omitempty"`
	RunTimeoutMs     int64           `json:"run_timeout_ms,omitempty"`
	RetryMaxAttempts int             `json:"retry_max_attempts,omitempty"`
	RetryInitialMs   int64           `json:"retry_initial_ms,omitempty"`
	RetryMaxMs       int64           `json:"retry_max_ms,omitempty"`
	ConcurrencyLimit int             `json:"concurrency_limit,omitempty"`
	ConcurrencyKey   string          `json:"concurrency_key,omitempty"`
}

// StartReply names the run.
type StartReply struct {
	ID      string `json:"id"`
	Created bool   `json:"created"`
}

// ResumeRequest decides a waiting step. There is no "decided by": the
// service records the requester's verified identity.
type ResumeRequest struct {
	RunID   string          `json:"run_id"`
	StepKey string          `json:"step_key"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// RunRequest names a run.
type RunRequest struct {
	RunID string `json:"run_id"`
}

// PublishRequest publishes an event on a topic runs wait on.
type PublishRequest struct {
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
}

// ListRequest filters the run index.
type ListRequest struct {
	Status string `json:"status,omitempty"`
	Agent  string `json:"agent,omitempty"`
	Limit  int    `json:"limit,omitempty"`
}

// ListReply is the run index, newest first (JSON of []events.Summary), and
// the index entries that could not be read (JSON of []index.BadEntry).
type ListReply struct {
	Runs       json.RawMessage `json:"runs"`
	Unreadable json.RawMessage `json:"unreadable,omitempty"`
}

// GrantsRequest filters grants (hitl.GrantFilter on the wire).
type GrantsRequest struct {
	Scope   string `json:"scope,omitempty"`
	ScopeID string `json:"scope_id,omitempty"`
	Kind    string `json:"kind,omitempty"`
}

// RevokeGrantRequest names a grant.
type RevokeGrantRequest struct {
	ID string `json:"id"`
}

// BudgetScope names a budget: kind run, agent or namespace (ratelimit.Scope).
type BudgetScope struct {
	Kind string `json:"kind"`
	ID   string `json:"id,omitempty"`
}

// BudgetRequest reads one budget (Scope set) or all.
type BudgetRequest struct {
	Scope *BudgetScope `json:"scope,omitempty"`
}

// SetBudgetRequest changes a budget's limits; a nil limit keeps its value.
type SetBudgetRequest struct {
	Scope  BudgetScope `json:"scope"`
	Tokens *int64      `json:"tokens,omitempty"`
	Cost   *float64    `json:"cost,omitempty"`
}

// SetBudgetReply is the budget after the change (JSON of
// ratelimit.BudgetState) and the runs it let continue.
type SetBudgetReply struct {
	Budget  json.RawMessage `json:"budget"`
	Resumed []string        `json:"resumed,omitempty"`
}

// WireError is a coded error as it travels in a reply (control and
// sandbox requests): the code survives, so the receiving side gets an
// error with the same code back.
type WireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// CodeInternal marks an error that carried no code.
const CodeInternal perr.Code = "INTERNAL"

// ToWire flattens err: a coded error keeps its code and fix, and its cause
// is folded into the message; any other error gets fallback.
func ToWire(err error, fallback perr.Code) *WireError {
	var pe *perr.Error
	if !errors.As(err, &pe) {
		return &WireError{Code: string(fallback), Message: err.Error()}
	}
	msg := pe.Msg
	if pe.Cause != nil {
		msg += ": " + pe.Cause.Error()
	}
	return &WireError{Code: string(pe.Code), Message: msg, Fix: pe.Fix}
}

// Err turns the wire error back into a coded error.
func (w *WireError) Err(fallback perr.Code) error {
	code := perr.Code(w.Code)
	if code == "" {
		code = fallback
	}
	return &perr.Error{Code: code, Msg: w.Message, Fix: w.Fix}
}
