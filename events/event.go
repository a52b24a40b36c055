// Package events defines the events of a run's history, their wire codec
// (versioned msgpack with a digest) and the JetStream event store.
//
// The history of a run is the ordered list of its events on the subjects
// polos.<ns>.run.<partition>.<runID>.<type>, in stream POLOS_RUNS_<partition>
// (protocol.RunPartition). It is the only authoritative state of a run.
package events

import (
	"encoding/json"
	"time"
)

// Type is the kind of an event; it is also the last token of its subject,
// so `polos.*.run.*.*.suspended` selects every approval request.
type Type string

// Event types. Positional events (steps, values, timers, suspends, waits,
// children) carry Pos, the 1-based index of the durable call in the
// workflow code; replay matches them by position and name.
const (
	RunStarted     Type = "run_started"     // Data: input; Attrs: workflow, queue, parent, session
	StepStarted    Type = "step_started"    // before a side-effecting step runs; Key: idempotency key
	StepCompleted  Type = "step_completed"  // Data: result
	StepFailed     Type = "step_failed"     // one attempt failed; Err; Attrs["final"]="true" when no retry follows
	StepUncertain  Type = "step_uncertain"  // a started step whose outcome is unknown (crash mid-step)
	ValueRecorded  Type = "value_recorded"  // Now / UUID / Random: Data holds the value
	TimerSet       Type = "timer_set"       // Sleep or a wait timeout; Attrs["fire_at"] RFC3339Nano
	TimerFired     Type = "timer_fired"     // Pos of the timer
	Suspended      Type = "suspended"       // Key: step key; Data: payload (form); Attrs["timeout_at"]
	Resumed        Type = "resumed"         // Key: step key; Data: resume data; Attrs: decided_by
	WaitRegistered Type = "wait_registered" // WaitForEvent: Key: topic; Attrs["after_seq"]
	EventReceived  Type = "event_received"  // Key: topic; Pos of the wait; Data: event payload
	ChildStarted   Type = "child_started"   // Key: child run ID; Name: child workflow
	ChildFinished  Type = "child_finished"  // Key: child run ID; Data: result or Err
	CancelRequest  Type = "cancel_requested"
	Annotation     Type = "annotation"    // informational (rate-limit wait, sandbox reset); never replayed
	RunCompleted   Type = "run_completed" // Data: result
	RunFailed      Type = "run_failed"    // Err
	RunCancelled   Type = "run_cancelled"
	RunParked      Type = "run_parked" // non-determinism: Err; an operator must act
	RunRetry       Type = "run_retry"  // the workflow failed and starts again from the top: Err; Attrs attempt, retry_at
)

// Signal types are appended by others than the run's executor (clients,
// other runs, timers). An executor whose append conflicts with a signal
// reloads and continues; any other conflict means it lost the run.
func (t Type) IsSignal() bool {
	switch t {
	case Resumed, ChildFinished, CancelRequest, EventReceived:
		return true
	}
	return false
}

// IsTerminal reports whether t ends a run.
func (t Type) IsTerminal() bool {
	switch t {
	case RunCompleted, RunFailed, RunCancelled:
		return true
	}
	return false
}

// ErrorInfo is a recorded error.
type ErrorInfo struct {
	Code      string `msgpack:"c,omitempty" json:"code,omitempty"`
	Message   string `msgpack:"m" json:"message"`
	Retryable bool   `msgpack:"r,omitempty" json:"retryable,omitempty"`
}

// Event is one entry of a run's history.
type Event struct {
	V       uint8             `msgpack:"v" json:"v"`
	Type    Type              `msgpack:"t" json:"type"`
	RunID   string            `msgpack:"r" json:"run_id"`
	Pos     int               `msgpack:"p,omitempty" json:"pos,omitempty"`
	Name    string            `msgpack:"n,omitempty" json:"name,omitempty"`
	Key     string            `msgpack:"k,omitempty" json:"key,omitempty"`
	Attempt int               `msgpack:"a,omitempty" json:"attempt,omitempty"`
	Time    int64             `msgpack:"ts" json:"-"`
	Writer  string            `msgpack:"w,omitempty" json:"writer,omitempty"`
	Data    []byte            `msgpack:"d,omitempty" json:"-"`
	Blob    string            `msgpack:"b,omitempty" json:"blob,omitempty"` // sha256 of Data when stored in the object store
	Err     *ErrorInfo        `msgpack:"e,omitempty" json:"error,omitempty"`
	Attrs   map[string]string `msgpack:"x,omitempty" json:"attrs,omitempty"`
	// Prior are events stored in the same message before this one (format
	// version 2). Readers never see them here: Expand turns a message
	// into its events, and the store and clients return expanded histories.
	Prior []Event `msgpack:"pr,omitempty" json:"-"`
	// PrevSeq and Prev link the message to the one before it in the run's
	// history: its sequence and digest (the chain, chain.go). Store.Append
	// sets them from the Tip it follows; run_started has none, and
	// messages written before the chain existed have none either.
	PrevSeq uint64 `msgpack:"ps,omitempty" json:"prev_seq,omitempty"`
	Prev    string `msgpack:"pv,omitempty" json:"prev,omitempty"`

	// Seq is the sequence in the run's partition stream; set when read or
	// appended, not encoded.
	Seq uint64 `msgpack:"-" json:"seq"`
	// Cursor is the resume position over all runs just past this event;
	// set only when following every run (client.FollowAll).
	Cursor string `msgpack:"-" json:"cursor,omitempty"`
	// Digest is the sha256 of the encoded event; set by Encode/Decode.
	Digest string `msgpack:"-" json:"digest,omitempty"`
}

// At returns the writer's timestamp.
func (e *Event) At() time.Time { return time.Unix(0, e.Time).UTC() }

// Attr returns an attribute or "".
func (e *Event) Attr(k string) string { return e.Attrs[k] }

// SetAttr sets an attribute.
func (e *Event) SetAttr(k, v string) {
	if e.Attrs == nil {
		e.Attrs = map[string]string{}
	}
	e.Attrs[k] = v
}

// MarshalJSON renders Data as JSON when it is valid JSON (it always is for
// payloads Polos writes), so `polos tail -o jsonl` is readable.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	out := struct {
		plain
		Time string          `json:"time"`
		Data json.RawMessage `json:"data,omitempty"`
	}{plain: plain(e), Time: e.At().Format(time.RFC3339Nano)}
	if len(e.Data) > 0 {
		if json.Valid(e.Data) {
			out.Data = e.Data
		} else {
			b, _ := json.Marshal(e.Data)
			out.Data = b
		}
	}
	return json.Marshal(out)
}
