// Package polos is the public Go API for writing durable workflows.
//
// A workflow is an ordinary Go function registered by name:
//
//	reg := polos.NewRegistry()
//	polos.Register(reg, "greet", func(ctx polos.Context, name string) (string, error) {
//		msg, err := polos.Step(ctx, "compose", func(ctx context.Context, key string) (string, error) {
//			return "Hello, " + name, nil
//		})
//		return msg, err
//	})
//
// Every durable call (Step, Now, UUID, Random, Sleep, Suspend,
// WaitForEvent, Invoke, InvokeAndWait) is recorded in the run's history on
// JetStream. After a crash, any executor replays the function from the top
// and each call returns its recorded result, so completed steps never run
// twice. Code between durable calls must be deterministic: the same history
// must lead to the same calls in the same order, or the run parks with a
// [POLOS-NONDETERMINISM] error naming the position.
package polos

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/replay"
)

// Context is what workflow code receives (a context.Context cancelled when
// the run is cancelled).
type Context = replay.Context

// Re-exported options.
type (
	StepOption    = replay.StepOption
	RetryPolicy   = replay.RetryPolicy
	SuspendOption = replay.SuspendOption
	InvokeOption  = replay.InvokeOption
)

var (
	WithRetry          = replay.WithRetry
	Idempotent         = replay.Idempotent
	CompleteNow        = replay.CompleteNow
	WhenUncertain      = replay.WhenUncertain
	WithStepTimeout    = replay.WithStepTimeout
	SuspendTimeout     = replay.SuspendTimeout
	ChildID            = replay.ChildID
	ChildQueue         = replay.ChildQueue
	NonRetryable       = replay.NonRetryable
	DefaultRetryPolicy = replay.DefaultRetryPolicy
)

const (
	RerunWithSameKey = replay.RerunWithSameKey
	FailUncertain    = replay.FailUncertain
)

// Registry maps workflow names to code. Safe for concurrent use.
type Registry struct {
	mu sync.RWMutex
	m  map[string]replay.WorkflowFunc
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]replay.WorkflowFunc{}} }

// Register adds a typed workflow. Input and output travel as JSON.
func Register[In, Out any](r *Registry, name string, fn func(ctx Context, in In) (Out, error)) {
	RegisterRaw(r, name, func(ctx replay.Context, raw json.RawMessage) (json.RawMessage, error) {
		var in In
		if len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &in); err != nil {
				return nil, replay.NonRetryable(perr.Wrap(err, replay.CodeBadPayload, "pass input matching the workflow's input type", "input of workflow %q", name))
			}
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(out)
		if err != nil {
			return nil, perr.Wrap(err, replay.CodeBadPayload, "return a value encoding/json can marshal", "result of workflow %q", name)
		}
		return b, nil
	})
}

// RegisterRaw adds a workflow working on raw JSON.
func RegisterRaw(r *Registry, name string, fn replay.WorkflowFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[name] = fn
}

// Lookup finds a workflow.
func (r *Registry) Lookup(name string) (replay.WorkflowFunc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	fn, ok := r.m[name]
	return fn, ok
}

// Names lists registered workflows, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.m))
	for k := range r.m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Step runs fn once per run: its result (or final error) is recorded, and a
// replay returns the record without running fn again. fn receives the
// step's idempotency key (run ID + position).
func Step[T any](ctx Context, name string, fn func(ctx context.Context, key string) (T, error), opts ...StepOption) (T, error) {
	var zero T
	raw, err := ctx.Step(name, func(c context.Context, key string) (any, error) { return fn(c, key) }, opts...)
	if err != nil {
		return zero, err
	}
	return decode[T](raw, "step "+name)
}

// Suspend parks the run until a person (or system) resumes step key; it
// returns the resume data. The run holds nothing while it waits.
func Suspend[T any](ctx Context, key string, payload any, opts ...SuspendOption) (T, error) {
	var zero T
	raw, err := ctx.Suspend(key, payload, opts...)
	if err != nil {
		return zero, err
	}
	return decode[T](raw, "resume data of "+key)
}

// WaitForEvent parks the run until an event is published on topic after
// the wait was registered (events published earlier are not delivered).
func WaitForEvent[T any](ctx Context, topic string, timeout time.Duration) (T, error) {
	var zero T
	raw, err := ctx.WaitForEvent(topic, timeout)
	if err != nil {
		return zero, err
	}
	return decode[T](raw, "event on "+topic)
}

// InvokeAndWait starts a child workflow and waits for its result.
func InvokeAndWait[Out any](ctx Context, workflow string, input any, opts ...InvokeOption) (Out, error) {
	var zero Out
	id, err := ctx.Invoke(workflow, input, opts...)
	if err != nil {
		return zero, err
	}
	raw, err := ctx.WaitChild(id)
	if err != nil {
		return zero, err
	}
	return decode[Out](raw, "result of child "+id)
}

// Result is one item of a batch.
type Result[T any] struct {
	Value T
	Err   error
}

// InvokeAll starts one child per input (all start before any is awaited,
// so they run in parallel) and returns their run IDs in input order.
func InvokeAll(ctx Context, workflow string, inputs []any) ([]string, error) {
	ids := make([]string, len(inputs))
	for i, in := range inputs {
		id, err := ctx.Invoke(workflow, in)
		if err != nil {
			return ids[:i], err
		}
		ids[i] = id
	}
	return ids, nil
}

// InvokeAllAndWait runs one child per input in parallel and returns their
// results in input order, each with its own success or error.
func InvokeAllAndWait[Out any](ctx Context, workflow string, inputs []any) ([]Result[Out], error) {
	ids, err := InvokeAll(ctx, workflow, inputs)
	if err != nil {
		return nil, err
	}
	out := make([]Result[Out], len(ids))
	for i, id := range ids {
		raw, err := ctx.WaitChild(id)
		if err != nil {
			out[i].Err = err
			continue
		}
		out[i].Value, out[i].Err = decode[Out](raw, "result of child "+id)
	}
	return out, nil
}

func decode[T any](raw json.RawMessage, what string) (T, error) {
	var v T
	if len(raw) == 0 {
		return v, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, perr.Wrap(err, replay.CodeBadPayload, "make the type match what was recorded", "cannot decode %s", what)
	}
	return v, nil
}
