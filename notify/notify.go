// Package notify reaches people when a run waits for them: one Channel
// interface, a signed generic webhook, and Slack (Web API). A channel posts
// a request (Notify) and later marks it decided (Update). Discord and email
// are small additions: implement Notify and Update over their APIs.
//
// Channels never decide anything themselves: decisions come back through
// the approval page or the Slack interactions endpoint (hitl/web), which
// resume the run through client.Resume.
package notify

import (
	"context"
	"errors"
	"time"

	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/perr"
)

// Error codes.
const (
	CodeDelivery  perr.Code = "NOTIFY_DELIVERY"  // the channel refused or could not be reached after retries
	CodeSignature perr.Code = "NOTIFY_SIGNATURE" // a signed request failed verification
)

// Request is one waiting step to tell people about.
type Request struct {
	Namespace   string       `json:"namespace"`
	RunID       string       `json:"run_id"`
	StepKey     string       `json:"step_key"`
	Agent       string       `json:"agent,omitempty"`
	Payload     hitl.Payload `json:"form"`
	ApprovalURL string       `json:"approval_url"`         // the web page (carries the token)
	Token       string       `json:"-"`                    // the approval token, for one-click buttons; never sent to webhooks
	TimeoutAt   string       `json:"timeout_at,omitempty"` // RFC 3339, when the suspend has a timeout
}

// Ref identifies a posted notification so it can be updated.
type Ref struct {
	Channel string `json:"channel"`          // channel kind ("slack", "webhook")
	Target  string `json:"target,omitempty"` // e.g. the Slack channel ID
	ID      string `json:"id"`               // e.g. the Slack message ts
}

// Outcome is how a waiting step ended.
type Outcome struct {
	Approved  bool      `json:"approved"`
	Feedback  string    `json:"feedback,omitempty"`
	DecidedBy string    `json:"decided_by"`
	DecidedAt time.Time `json:"decided_at"`
	TimedOut  bool      `json:"timed_out,omitempty"`
}

// Channel is one way of reaching people.
type Channel interface {
	// Notify posts the request; the Ref lets Update find it again.
	Notify(ctx context.Context, r Request) (Ref, error)
	// Update marks the posted request decided (buttons removed, outcome shown).
	Update(ctx context.Context, ref Ref, o Outcome) error
}

// Summary is a one-line text of the outcome, shared by all channels.
func (o Outcome) Summary() string {
	at := o.DecidedAt.UTC().Format("2006-01-02 15:04:05 MST")
	switch {
	case o.TimedOut:
		return "Timed out at " + at + ": treated as rejected"
	case o.Approved:
		return "Approved by " + o.DecidedBy + " at " + at
	}
	s := "Rejected by " + o.DecidedBy + " at " + at
	if o.Feedback != "" {
		s += ". Feedback: " + o.Feedback
	}
	return s
}

// retry runs attempt up to max times with exponential backoff starting at
// first, while it returns a retryable error (errRetry wrapping).
func retry(ctx context.Context, max int, first time.Duration, attempt func() error) error {
	wait := first
	var err error
	for i := 0; i < max; i++ {
		if err = attempt(); err == nil {
			return nil
		}
		var r retryable
		if !errors.As(err, &r) || i == max-1 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait *= 2
	}
	var r retryable
	if errors.As(err, &r) {
		return r.err
	}
	return err
}

// retryable marks an error worth another attempt (5xx, network).
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }
