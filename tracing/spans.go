// Package tracing derives OpenTelemetry traces from run histories.
//
// Spans come from events as they are appended, never from workflow code:
// a run replayed after a crash re-runs its code but appends nothing it had
// recorded, so it emits no span twice. Identifiers are derived, not
// random: the trace id from the run's root (a child run's trace is its
// parent's), span ids from the run and the position of what they cover,
// so a run resumed on another executor continues one trace, and a span
// exported twice (a tracer that died between export and ack) carries the
// same id both times.
//
// The core of the package is pure: a RunTrace takes a run's events in
// order and returns the spans they complete. Follower feeds it from
// JetStream and Exporter hands the spans to the OpenTelemetry SDK.
package tracing

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/polos-run/polos/agent"
	"github.com/polos-run/polos/events"
)

// Span is one finished span, ready to export.
type Span struct {
	TraceID trace.TraceID
	ID      trace.SpanID
	// Parent is the enclosing span (the run's span for a step, the parent
	// run's span for a child run's); invalid for a root run.
	Parent trace.SpanID
	Name   string
	Kind   trace.SpanKind
	Start  time.Time
	End    time.Time
	Attrs  []attribute.KeyValue
	// Events are point-in-time notes on the span (retries, rate-limit
	// waits, sandbox resets: the run's annotations).
	Events []SpanEvent
	// Err, when set, marks the span failed with this description.
	Err string
}

// SpanEvent is a timestamped note on a span.
type SpanEvent struct {
	Name  string
	At    time.Time
	Attrs []attribute.KeyValue
}

// MaxRunSpanEvents bounds the notes kept on one run span (a long run with
// many rate-limit waits would otherwise grow without bound).
const MaxRunSpanEvents = 64

// TraceIDOf is the trace id of every span of the run tree whose root run
// is root in namespace ns.
func TraceIDOf(ns, root string) trace.TraceID {
	var id trace.TraceID
	h := sha256.Sum256([]byte("polos-trace\x00" + ns + "\x00" + root))
	copy(id[:], h[:])
	return id
}

// SpanIDOf is the id of the span of run runID that covers what (see the
// span names of RunTrace.Observe: "run", "step/3/1", "wait/suspend/4").
func SpanIDOf(ns, runID, what string) trace.SpanID {
	var id trace.SpanID
	h := sha256.Sum256([]byte("polos-span\x00" + ns + "\x00" + runID + "\x00" + what))
	copy(id[:], h[:])
	return id
}

// RunTrace is the tracing state of one run: what its events opened and
// has not yet closed. Feed it the run's events in history order.
type RunTrace struct {
	NS, RunID string
	// Root is the run at the top of the run's tree (the run itself when it
	// has no parent), found with RootOf when run_started names a parent.
	Root string
	// RootOf maps a parent run to the root of its tree (nil: the parent is
	// the root).
	RootOf func(parent string) string
	// Parent is the parent run (run_started's parent attribute), "" for a
	// root run.
	Parent string

	workflow string
	started  time.Time
	last     time.Time // time of the previous event: the start of a step without a start mark
	steps    map[int]time.Time
	waits    map[string]opened
	notes    []SpanEvent
	lastSeq  uint64 // Follower: the last sequence fed
}

// NewRunTrace returns the state of a run nothing was seen of yet.
func NewRunTrace(ns, runID string) *RunTrace {
	return &RunTrace{NS: ns, RunID: runID, Root: runID, steps: map[int]time.Time{}, waits: map[string]opened{}}
}

// Observe takes the run's next event and returns the spans it ends (none
// for most events). It never fails: an event it does not understand ends
// nothing.
func (t *RunTrace) Observe(ev events.Event) []Span {
	at := ev.At()
	defer func() { t.last = at }()
	switch ev.Type {
	case events.RunStarted:
		t.workflow, t.started, t.Parent = ev.Attr("workflow"), at, ev.Attr("parent")
		switch {
		case t.Parent == "":
			t.Root = t.RunID
		case t.RootOf != nil:
			t.Root = t.RootOf(t.Parent)
		default:
			t.Root = t.Parent
		}
	case events.StepStarted:
		t.steps[ev.Pos] = at
	case events.StepCompleted, events.StepFailed, events.StepUncertain:
		start, ok := t.steps[ev.Pos]
		if !ok {
			start = t.last
		}
		delete(t.steps, ev.Pos)
		return []Span{t.stepSpan(ev, start, at)}
	case events.TimerSet, events.WaitRegistered, events.Suspended, events.ChildStarted:
		t.waits[waitKey(ev)] = opened{at: at, name: ev.Name}
	case events.TimerFired, events.EventReceived, events.Resumed, events.ChildFinished:
		k := waitKey(ev)
		o, ok := t.waits[k]
		if !ok {
			return nil // its opening event was never seen (a timer fired for a wait that had none)
		}
		delete(t.waits, k)
		return []Span{t.waitSpan(ev, o, at)}
	case events.Annotation, events.RunRetry, events.CancelRequest, events.RunParked:
		if len(t.notes) < MaxRunSpanEvents {
			n := SpanEvent{Name: string(ev.Type), At: at}
			if ev.Name != "" {
				n.Attrs = append(n.Attrs, attribute.String("polos.name", ev.Name))
			}
			if ev.Err != nil {
				n.Attrs = append(n.Attrs, attribute.String("polos.error", ev.Err.Message))
			}
			t.notes = append(t.notes, n)
		}
	case events.RunCompleted, events.RunFailed, events.RunCancelled:
		return []Span{t.runSpan(ev, at)}
	}
	return nil
}

// HistorySpans returns every span a run's history ends: what a follower
// exports for the run, message by message.
func HistorySpans(ns string, hist []events.Event, rootOf func(parent string) string) []Span {
	if len(hist) == 0 {
		return nil
	}
	t := NewRunTrace(ns, hist[0].RunID)
	t.RootOf = rootOf
	var out []Span
	for _, ev := range hist {
		out = append(out, t.Observe(ev)...)
	}
	return out
}

// waitKey pairs a wait's opening and closing events: by position for
// timers, by key (step key, topic, child run) for the others.
func waitKey(ev events.Event) string {
	switch ev.Type {
	case events.TimerSet, events.TimerFired:
		return "timer/" + strconv.Itoa(ev.Pos)
	case events.WaitRegistered, events.EventReceived:
		return "event/" + strconv.Itoa(ev.Pos)
	case events.Suspended, events.Resumed:
		return "suspend/" + ev.Key
	default:
		return "child/" + ev.Key
	}
}

func (t *RunTrace) span(what, name string, start, end time.Time) Span {
	return Span{TraceID: TraceIDOf(t.NS, t.Root), ID: SpanIDOf(t.NS, t.RunID, what),
		Parent: SpanIDOf(t.NS, t.RunID, "run"), Name: name, Kind: trace.SpanKindInternal, Start: start, End: end,
		Attrs: []attribute.KeyValue{attribute.String("polos.run_id", t.RunID), attribute.String("polos.workflow", t.workflow)}}
}

func (t *RunTrace) runSpan(ev events.Event, end time.Time) Span {
	s := t.span("run", "run "+t.workflow, t.started, end)
	s.Parent = trace.SpanID{}
	if t.Parent != "" {
		s.Parent = SpanIDOf(t.NS, t.Parent, "run")
		s.Attrs = append(s.Attrs, attribute.String("polos.parent_run_id", t.Parent))
	}
	s.Kind = trace.SpanKindServer
	s.Attrs = append(s.Attrs, attribute.String("polos.status", strings.TrimPrefix(string(ev.Type), "run_")))
	if ev.Err != nil {
		s.Err = errText(ev.Err)
	}
	s.Events = t.notes
	return s
}

func (t *RunTrace) stepSpan(ev events.Event, start, end time.Time) Span {
	s := t.span("step/"+strconv.Itoa(ev.Pos)+"/"+strconv.Itoa(ev.Attempt), "step "+ev.Name, start, end)
	s.Attrs = append(s.Attrs, attribute.String("polos.step", ev.Name), attribute.Int("polos.position", ev.Pos), attribute.Int("polos.attempt", ev.Attempt))
	switch ev.Type {
	case events.StepFailed:
		s.Err = errText(ev.Err)
		s.Attrs = append(s.Attrs, attribute.Bool("polos.final", ev.Attr("final") == "true"))
	case events.StepUncertain:
		s.Err = "outcome uncertain: the executor stopped before recording the step's outcome"
	case events.StepCompleted:
		describeStep(&s, ev)
	}
	return s
}

// describeStep names the agent's steps after what they did, with the
// OpenTelemetry GenAI conventions for model calls and tool executions.
// The recorded result is the source; a result that does not decode leaves
// the generic step span.
func describeStep(s *Span, ev events.Event) {
	kind, arg, _ := strings.Cut(ev.Name, ":")
	switch kind {
	case "llm":
		var c agent.LLMCall
		if json.Unmarshal(ev.Data, &c) != nil || c.Model == "" && c.Response.Model == "" {
			return // not an agent's model call (a workflow's own step of that name)
		}
		s.Name, s.Kind = "chat "+c.Model, trace.SpanKindClient
		u := c.Response.Usage
		s.Attrs = append(s.Attrs,
			attribute.String("gen_ai.operation.name", "chat"),
			attribute.String("gen_ai.request.model", c.Model),
			attribute.String("gen_ai.response.model", c.Response.Model),
			attribute.StringSlice("gen_ai.response.finish_reasons", []string{c.Response.StopReason}),
			attribute.Int64("gen_ai.usage.input_tokens", u.InputTokens),
			attribute.Int64("gen_ai.usage.output_tokens", u.OutputTokens),
			attribute.Int64("gen_ai.usage.cache_read.input_tokens", u.CacheReadTokens),
			attribute.Int64("gen_ai.usage.cache_creation.input_tokens", u.CacheWriteTokens),
			attribute.Float64("polos.cost_usd", c.CostUSD),
			attribute.Int64("polos.latency_ms", c.LatencyMs),
			attribute.Int("polos.turn", atoi(arg)))
	case "tool":
		var out agent.ToolOutcome
		if json.Unmarshal(ev.Data, &out) != nil {
			return
		}
		if out.Output == nil {
			out.Output = ev.Data // a workflow's own tool step records the result itself
		}
		s.Name = "execute_tool " + arg
		s.Attrs = append(s.Attrs, attribute.String("gen_ai.operation.name", "execute_tool"), attribute.String("gen_ai.tool.name", arg),
			attribute.Bool("polos.tool.is_error", out.IsError), attribute.Bool("polos.sandbox_lost", out.Lost))
		var res struct {
			ExitCode  *int   `json:"exit_code"`
			Truncated bool   `json:"truncated"`
			Command   string `json:"command"`
		}
		if json.Unmarshal(out.Output, &res) == nil {
			if res.ExitCode != nil {
				s.Attrs = append(s.Attrs, attribute.Int("polos.exec.exit_code", *res.ExitCode))
			}
			s.Attrs = append(s.Attrs, attribute.Bool("polos.output.truncated", res.Truncated))
		}
		if out.IsError {
			s.Err = "the tool returned an error to the agent"
		}
	case "policy":
		var rec agent.PolicyRecord
		if json.Unmarshal(ev.Data, &rec) != nil {
			return
		}
		s.Name = "policy " + arg
		s.Attrs = append(s.Attrs, attribute.String("polos.policy.decision", string(rec.Decision)), attribute.String("polos.policy.digest", rec.PolicyDigest))
		if len(rec.Reasons) > 0 {
			s.Attrs = append(s.Attrs, attribute.String("polos.policy.reason", fmt.Sprintf("%s: %s", rec.Reasons[0].Segment, rec.Reasons[0].Rule)))
		}
		if rec.Grant != "" {
			s.Attrs = append(s.Attrs, attribute.String("polos.policy.grant", rec.Grant))
		}
	case "ratelimit":
		var waitMs int64
		if json.Unmarshal(ev.Data, &waitMs) == nil {
			s.Name = "rate_limit"
			s.Attrs = append(s.Attrs, attribute.Int64("polos.rate_limit.wait_ms", waitMs))
		}
	case "sandbox":
		s.Name = "sandbox " + arg
		s.Attrs = append(s.Attrs, attribute.String("polos.sandbox.op", arg))
	}
}

// opened is a wait's opening event: when, and what it named (the child
// workflow of a child_started).
type opened struct {
	at   time.Time
	name string
}

func (t *RunTrace) waitSpan(ev events.Event, o opened, end time.Time) Span {
	k, start := waitKey(ev), o.at
	s := t.span("wait/"+k, "", start, end)
	s.Attrs = append(s.Attrs, attribute.Int64("polos.waited_ms", end.Sub(start).Milliseconds()))
	switch ev.Type {
	case events.TimerFired:
		s.Name = "sleep"
	case events.EventReceived:
		s.Name = "wait_for_event " + ev.Key
		s.Attrs = append(s.Attrs, attribute.String("polos.topic", ev.Key))
	case events.Resumed:
		s.Name = "approval " + ev.Key
		s.Attrs = append(s.Attrs, attribute.String("polos.decided_by", ev.Attr("decided_by")))
		var d struct {
			Approved *bool `json:"approved"`
		}
		if json.Unmarshal(ev.Data, &d) == nil && d.Approved != nil {
			s.Attrs = append(s.Attrs, attribute.Bool("polos.approved", *d.Approved))
		}
		if ev.Attr("timed_out") == "true" {
			s.Err = "the wait timed out"
		}
	case events.ChildFinished:
		s.Name = "child " + o.name
		s.Attrs = append(s.Attrs, attribute.String("polos.child_run_id", ev.Key))
		if ev.Err != nil {
			s.Err = errText(ev.Err)
		}
	}
	return s
}

func errText(e *events.ErrorInfo) string {
	if e == nil {
		return "failed"
	}
	if e.Code != "" {
		return "[" + e.Code + "] " + e.Message
	}
	return e.Message
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
