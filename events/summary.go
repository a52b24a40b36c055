package events

import (
	"encoding/json"
	"strconv"
	"time"
)

// Run statuses (the JSON contract of `polos status`).
const (
	StatusRunning   = "running"
	StatusWaiting   = "waiting"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
	// StatusDamaged: the history holds a message that cannot be read, so
	// the run cannot be replayed; it is parked until an operator restores
	// the stream or cancels the run (Summary.Damage says where and what;
	// docs/adr/0007-unreadable-events.md).
	StatusDamaged = "damaged"
)

// IsFinal reports whether status is one a run never leaves (completed,
// failed or cancelled).
func IsFinal(status string) bool {
	return status == StatusCompleted || status == StatusFailed || status == StatusCancelled
}

// Waiting kinds.
const (
	WaitApproval = "suspend"  // Suspend: a person decides (approval, ask_user)
	WaitTimer    = "sleep"    // Sleep
	WaitEvent    = "event"    // WaitForEvent
	WaitChild    = "child"    // InvokeAndWait
	WaitOperator = "operator" // parked on non-determinism
)

// ParkedKeyPrefix prefixes the step key of a run parked on non-determinism;
// resuming that key retries the run with the (fixed) code.
const ParkedKeyPrefix = "nondeterminism-"

// WaitingStep is a step a run waits on.
type WaitingStep struct {
	StepKey   string          `json:"step_key"`
	Kind      string          `json:"kind"`
	Pos       int             `json:"pos,omitempty"`
	Form      json.RawMessage `json:"form,omitempty"`
	TimeoutAt string          `json:"timeout_at,omitempty"`
	Seq       uint64          `json:"seq"`
}

// Summary is a run's state derived from its history.
type Summary struct {
	ID        string          `json:"id"`
	Namespace string          `json:"namespace,omitempty"`
	Agent     string          `json:"agent"` // the workflow or agent name
	Status    string          `json:"status"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *ErrorInfo      `json:"error,omitempty"`
	Waiting   []WaitingStep   `json:"waiting,omitempty"`
	Parent    string          `json:"parent,omitempty"`
	Session   string          `json:"session,omitempty"`
	Queue     string          `json:"queue,omitempty"`
	// BuildID is the build of the executor code the run is pinned to.
	BuildID string `json:"build_id,omitempty"`
	// Stuck says why no live executor can serve the run (`polos list
	// --stuck`; empty otherwise).
	Stuck   string `json:"stuck,omitempty"`
	LastSeq uint64 `json:"last_seq"`
	// LastDigest is the digest of the message at LastSeq: with it the run
	// index records the history's tip, and a reader finds a history that
	// lost its tail or reused a sequence (CheckIndex).
	LastDigest string `json:"last_digest,omitempty"`
	Events     int    `json:"events"`
	// ExecUnconfined: a sandbox of this run runs commands unconfined on
	// its host (an AnnotationExecUnconfined was recorded).
	ExecUnconfined bool `json:"exec_unconfined,omitempty"`
	// Damage lists the history's unreadable messages (at most
	// MaxReportedDamage; DamagedMessages counts them all). A run with
	// damage and no final event has status damaged; a finished run keeps
	// its status and still reports the damage.
	Damage          []Damage `json:"damage,omitempty"`
	DamagedMessages int      `json:"damaged_messages,omitempty"`
}

// AnnotationExecUnconfined is the annotation an agent records when its
// sandbox runs exec unconfined (the local provider's unsafe mode).
const AnnotationExecUnconfined = "exec_unconfined"

// AttrBuildID is the attribute of the first event an executor appends to a
// run: the build ID of its code, to which the run is pinned.
const AttrBuildID = "build_id"

// BuildOf is the build ID a history is pinned to ("" before any executor
// appended to it).
func BuildOf(hist []Event) string {
	for i := range hist {
		if b := hist[i].Attr(AttrBuildID); b != "" {
			return b
		}
	}
	return ""
}

// Summarize derives a run's summary from its full history (vetted with Vet
// first, so a message out of place counts as damage). It is pure.
func Summarize(hist []Event) Summary {
	var s Summary
	if len(hist) == 0 {
		return s
	}
	hist = Vet(hist)
	first := hist[0] // run_started, or the stand-in of an unreadable first message
	s.ID = first.RunID
	s.Agent = first.Attr("workflow")
	s.Parent = first.Attr("parent")
	s.Session = first.Attr("session")
	s.Queue = first.Attr("queue")
	s.BuildID = BuildOf(hist)
	s.CreatedAt = first.At()
	s.Status = StatusRunning
	last := hist[len(hist)-1]
	s.UpdatedAt = last.At()
	s.LastSeq, s.LastDigest = last.Seq, last.Digest
	s.Events = len(hist)

	resolved := map[string]bool{}  // suspend keys with a resumed event
	timerFired := map[int]bool{}   // positions
	waitDone := map[int]bool{}     // wait positions with a delivery
	childDone := map[string]bool{} // child run IDs finished
	for _, e := range hist {
		switch e.Type {
		case Resumed:
			resolved[e.Key] = true
		case TimerFired:
			timerFired[e.Pos] = true
		case EventReceived:
			waitDone[e.Pos] = true
		case ChildFinished:
			childDone[e.Key] = true
		case Annotation:
			s.ExecUnconfined = s.ExecUnconfined || e.Name == AnnotationExecUnconfined
		}
	}
	parked := 0
	for _, e := range hist {
		switch e.Type {
		case Suspended:
			if !resolved[e.Key] {
				s.Waiting = append(s.Waiting, WaitingStep{StepKey: e.Key, Kind: WaitApproval, Pos: e.Pos, Form: rawJSON(e.Data), TimeoutAt: e.Attr("timeout_at"), Seq: e.Seq})
			}
		case TimerSet:
			if !timerFired[e.Pos] && e.Attr("for") == "" {
				s.Waiting = append(s.Waiting, WaitingStep{StepKey: "timer-" + strconv.Itoa(e.Pos), Kind: WaitTimer, Pos: e.Pos, TimeoutAt: e.Attr("fire_at"), Seq: e.Seq})
			}
		case WaitRegistered:
			child := e.Attr("child")
			if (child != "" && !childDone[child]) || (child == "" && !waitDone[e.Pos]) {
				kind := WaitEvent
				if child != "" {
					kind = WaitChild
				}
				s.Waiting = append(s.Waiting, WaitingStep{StepKey: e.Key, Kind: kind, Pos: e.Pos, TimeoutAt: e.Attr("timeout_at"), Seq: e.Seq})
			}
		case RunParked:
			parked++
			if !resolved[e.Key] {
				s.Waiting = append(s.Waiting, WaitingStep{StepKey: e.Key, Kind: WaitOperator, Form: operatorForm(e), Seq: e.Seq})
				s.Error = e.Err
			}
		case RunRetry:
			s.Waiting = nil // a new attempt starts from the top
		case RunCompleted:
			s.Status, s.Result = StatusCompleted, rawJSON(e.Data)
		case RunFailed:
			s.Status, s.Error = StatusFailed, e.Err
		case RunCancelled:
			s.Status = StatusCancelled
		}
	}
	if last.Type == RunRetry {
		s.Waiting = []WaitingStep{{StepKey: "retry-" + last.Attr("attempt"), Kind: WaitTimer, TimeoutAt: last.Attr("retry_at"), Seq: last.Seq}}
		s.Error = last.Err
	}
	if s.Status == StatusRunning && len(s.Waiting) > 0 {
		s.Status = StatusWaiting
	} else if s.Status != StatusRunning {
		s.Waiting = nil
	}
	s.Damage, s.DamagedMessages = Damages(hist)
	s.markDamaged()
	return s
}

// markDamaged sets status damaged (and the error saying what to do) when
// the summary reports damage and the run did not end.
func (s *Summary) markDamaged() {
	if s.DamagedMessages > 0 && !IsFinal(s.Status) {
		s.Status, s.Waiting = StatusDamaged, nil
		err := DamagedError(s.ID, s.Damage, s.DamagedMessages)
		s.Error = &ErrorInfo{Code: string(err.Code), Message: err.Error()}
	}
}

// AddDamage adds damage found outside the history (the run index recorded
// messages the history no longer holds: CheckIndex) and marks the run
// damaged unless it ended.
func (s *Summary) AddDamage(d Damage) {
	if len(s.Damage) < MaxReportedDamage {
		s.Damage = append(s.Damage, d)
	}
	s.DamagedMessages++
	s.markDamaged()
}

func operatorForm(e Event) json.RawMessage {
	msg := ""
	if e.Err != nil {
		msg = e.Err.Message
	}
	b, _ := json.Marshal(map[string]any{
		"_form": map[string]any{
			"title":       "Run parked: workflow code does not match its history",
			"description": msg,
			"fields":      []any{map[string]any{"key": "approved", "type": "boolean", "label": "Retry with the current code", "required": true}},
		},
		"_source": "operator",
	})
	return b
}

func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 || !json.Valid(b) {
		return nil
	}
	return json.RawMessage(b)
}
