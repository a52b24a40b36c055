// Package replay runs workflow code against a run's history: every durable
// call (Step, Now, UUID, Random, Sleep, Suspend, WaitForEvent, Invoke,
// WaitChild) is matched by position and name with the recorded events and
// returns the recorded result; the first call with no record is executed
// and appended. The I/O (appends, timers, children, event topics) sits behind
// the Journal and Effects interfaces, so the matching core runs the same on a
// real JetStream store and on a read-only golden history.
package replay

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/polos-run/polos/perr"
)

// WorkflowFunc is workflow code on raw JSON; the generic wrappers of the
// polos package adapt typed functions to it.
type WorkflowFunc func(ctx Context, input json.RawMessage) (json.RawMessage, error)

// StepFunc is the body of a step. key is the step's idempotency key
// (run ID + position): pass it to the side effect (a payment API's
// Idempotency-Key, a file marker) so a re-run after an uncertain outcome
// does not repeat it. The result must marshal to JSON.
type StepFunc func(ctx context.Context, key string) (any, error)

// Context is what workflow code receives. It is a context.Context that is
// cancelled when the run is cancelled. Durable calls must be made from the
// workflow's own goroutine, in a deterministic order.
type Context interface {
	context.Context
	RunID() string
	Workflow() string
	Namespace() string
	Session() string
	// IsReplaying reports whether the current position is being replayed
	// from history (useful to silence logs).
	IsReplaying() bool

	Step(name string, fn StepFunc, opts ...StepOption) (json.RawMessage, error)
	Now() time.Time
	UUID() string
	Random() uint64
	Sleep(d time.Duration) error
	Suspend(key string, payload any, opts ...SuspendOption) (json.RawMessage, error)
	WaitForEvent(topic string, timeout time.Duration) (json.RawMessage, error)
	Invoke(workflow string, input any, opts ...InvokeOption) (string, error)
	WaitChild(childID string) (json.RawMessage, error)
	// Annotate records an informational event (not replayed, not positional).
	Annotate(name string, attrs map[string]string) error
}

// Error codes raised to workflow code.
const (
	CodeStepFailed       perr.Code = "STEP_FAILED"        // the step's last attempt failed
	CodeOutcomeUncertain perr.Code = "OUTCOME_UNCERTAIN"  // a step started and its executor died
	CodeWaitTimeout      perr.Code = "WAIT_TIMEOUT"       // Suspend / WaitForEvent timed out
	CodeChildFailed      perr.Code = "CHILD_FAILED"       // a child workflow failed or was cancelled
	CodeCancelled        perr.Code = "RUN_CANCELLED"      // the run was cancelled
	CodeWorkflowNotFound perr.Code = "WORKFLOW_NOT_FOUND" // no workflow registered under that name
	CodeBadPayload       perr.Code = "BAD_PAYLOAD"        // a value does not marshal to JSON
	CodeDuplicateStepKey perr.Code = "DUPLICATE_STEP_KEY" // two Suspends of one run share a key
)

// RetryPolicy says how a failing step is retried. Every attempt is an event.
type RetryPolicy struct {
	MaxAttempts     int           // total attempts, >= 1
	InitialInterval time.Duration // delay before the second attempt
	Multiplier      float64       // growth per attempt
	MaxInterval     time.Duration // cap on one delay
	// Retryable decides which errors are retried; nil means all except
	// those wrapped with NonRetryable.
	Retryable func(error) bool
	// RetryAfter, if set, returns the delay the failed call asked for (a
	// provider's Retry-After). The next attempt waits at least that long;
	// the value is recorded on the step_failed event so a replay after a
	// crash honours it too.
	RetryAfter func(error) time.Duration
}

// Retry defaults.
const (
	DefaultMaxAttempts     = 3
	DefaultInitialInterval = 100 * time.Millisecond
	DefaultMultiplier      = 2.0
	DefaultMaxInterval     = 30 * time.Second
)

// DefaultRetryPolicy is used when a step sets none.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: DefaultMaxAttempts, InitialInterval: DefaultInitialInterval, Multiplier: DefaultMultiplier, MaxInterval: DefaultMaxInterval}
}

// OnUncertain says what a step does when history shows it started but
// never finished (its executor died mid-step).
type OnUncertain int

const (
	// RerunWithSameKey runs the step again with the same idempotency key
	// (the default; the step_uncertain event makes it visible).
	RerunWithSameKey OnUncertain = iota
	// FailUncertain fails the step with CodeOutcomeUncertain; the workflow
	// decides (e.g. ask a person, or check the external system).
	FailUncertain
)

type stepOptions struct {
	retry       RetryPolicy
	noStartMark bool
	onUncertain OnUncertain
	timeout     time.Duration
	completeNow bool
}

// StepOption configures one Step call.
type StepOption func(*stepOptions)

// WithRetry sets the step's retry policy.
func WithRetry(p RetryPolicy) StepOption { return func(o *stepOptions) { o.retry = p } }

// Idempotent marks a step safe to run twice: no step_started marker is
// recorded before it runs (one append instead of two), so a crash mid-step
// simply re-runs it.
func Idempotent() StepOption { return func(o *stepOptions) { o.noStartMark = true } }

// CompleteNow stores the step's completion as soon as the step returns. By
// default a completion rides on the run's next durable call (one append
// per step instead of two), so until then a crash leaves the step
// uncertain, as a crash during the step does. Use it for a step followed by
// long non-durable work (a big local computation) before the next durable
// call.
func CompleteNow() StepOption { return func(o *stepOptions) { o.completeNow = true } }

// WhenUncertain sets what happens after a crash mid-step.
func WhenUncertain(u OnUncertain) StepOption { return func(o *stepOptions) { o.onUncertain = u } }

// WithStepTimeout bounds one attempt.
func WithStepTimeout(d time.Duration) StepOption { return func(o *stepOptions) { o.timeout = d } }

type suspendOptions struct {
	timeout time.Duration
}

// SuspendOption configures Suspend.
type SuspendOption func(*suspendOptions)

// SuspendTimeout makes Suspend return a CodeWaitTimeout error if nobody
// decides within d. Enforced by a durable timer that survives restarts.
func SuspendTimeout(d time.Duration) SuspendOption { return func(o *suspendOptions) { o.timeout = d } }

type invokeOptions struct {
	id    string
	queue string
}

// InvokeOption configures Invoke.
type InvokeOption func(*invokeOptions)

// ChildID sets the child run's ID (default: <parent>-c<position>).
func ChildID(id string) InvokeOption { return func(o *invokeOptions) { o.id = id } }

// ChildQueue puts the child on a queue.
func ChildQueue(q string) InvokeOption { return func(o *invokeOptions) { o.queue = q } }

type nonRetryable struct{ error }

func (n nonRetryable) Unwrap() error { return n.error }

// NonRetryable marks err as permanent: the step fails without retrying.
func NonRetryable(err error) error { return nonRetryable{err} }

// WorkflowRetry retries a whole run: when the workflow function returns a
// retryable error, the run starts again from the top (a new attempt, with
// fresh positions) after a durable backoff. Every attempt stays in the
// history, separated by run_retry events.
type WorkflowRetry struct {
	MaxAttempts     int
	InitialInterval time.Duration
	MaxInterval     time.Duration
}

// Run-retry attributes of run_started.
const (
	AttrRetryMaxAttempts = "retry_max_attempts"
	AttrRetryInitialMs   = "retry_initial_ms"
	AttrRetryMaxMs       = "retry_max_ms"
)

// Attrs encodes the policy for run_started.
func (w WorkflowRetry) Attrs() map[string]string {
	return map[string]string{
		AttrRetryMaxAttempts: strconv.Itoa(w.MaxAttempts),
		AttrRetryInitialMs:   strconv.FormatInt(w.InitialInterval.Milliseconds(), 10),
		AttrRetryMaxMs:       strconv.FormatInt(w.MaxInterval.Milliseconds(), 10),
	}
}

func workflowRetryFrom(attrs map[string]string) RetryPolicy {
	n, _ := strconv.Atoi(attrs[AttrRetryMaxAttempts])
	ini, _ := strconv.ParseInt(attrs[AttrRetryInitialMs], 10, 64)
	mx, _ := strconv.ParseInt(attrs[AttrRetryMaxMs], 10, 64)
	p := RetryPolicy{MaxAttempts: n, InitialInterval: time.Duration(ini) * time.Millisecond, Multiplier: DefaultMultiplier, MaxInterval: time.Duration(mx) * time.Millisecond}
	if p.InitialInterval <= 0 {
		p.InitialInterval = time.Second
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = DefaultMaxInterval
	}
	return p
}
