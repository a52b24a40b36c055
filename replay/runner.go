package replay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
)

// Journal is the runner's view of the run's history store. Append writes
// after the last event the journal knows (compare-and-swap); it returns a
// *events.ConflictError on conflict. Refresh returns the events appended by
// others since the last known one.
type Journal interface {
	Append(ctx context.Context, ev *events.Event) (uint64, error)
	Refresh(ctx context.Context) ([]events.Event, error)
}

// Effects are the side effects of durable calls other than appends.
// Every method must be idempotent: a replay after a crash repeats them.
type Effects interface {
	// ScheduleWake makes the run's executor run again at `at` (durable).
	ScheduleWake(ctx context.Context, runID, key string, at time.Time) error
	// StartChild creates the child run (a no-op if it exists) and queues it.
	StartChild(ctx context.Context, parentID, childID, workflow string, input json.RawMessage, queue string) error
	// ChildOutcome returns the child's terminal event, or nil while it runs.
	ChildOutcome(ctx context.Context, childID string) (*events.Event, error)
	// TopicLastSeq is the sequence of the last event published on topic.
	TopicLastSeq(ctx context.Context, topic string) (uint64, error)
	// TopicEventAfter returns the first event on topic after sequence seq.
	TopicEventAfter(ctx context.Context, topic string, seq uint64) (data []byte, found bool, err error)
	// RegisterWaiter records that runID waits on topic, so publishers wake it.
	RegisterWaiter(ctx context.Context, topic, runID string) error
}

// OutcomeKind is how one execution of a run ended.
type OutcomeKind int

const (
	Completed OutcomeKind = iota + 1
	Failed
	Cancelled
	Waiting        // parked on a suspend, timer, event or child; holds nothing
	Parked         // non-determinism: waits for an operator
	LostOwnership  // another executor owns the run; stop quietly
	Infrastructure // the store or an effect failed; retry the task later
	Yielded        // the executor is shutting down: the run stopped at a durable call, everything recorded; another executor continues it
)

func (k OutcomeKind) String() string {
	return [...]string{"?", "completed", "failed", "cancelled", "waiting", "parked", "lost-ownership", "infrastructure", "yielded"}[k]
}

// Outcome is the result of Runner.Run.
type Outcome struct {
	Kind   OutcomeKind
	Result json.RawMessage
	Err    error
	// Terminal is the terminal event appended (or found) for Completed,
	// Failed and Cancelled.
	Terminal *events.Event
}

// Runner executes one workflow function against one run's history.
// A Runner is used once.
type Runner struct {
	Namespace string
	Journal   Journal
	Effects   Effects
	Clock     func() time.Time
	// StepHeartbeat, if set, is called periodically while a step runs.
	OnAppend func(ev *events.Event)

	// pendingDone is a step completion not stored yet: it rides on the
	// run's next append (docs/adr/0006-completion-rides-on-next-append.md).
	pendingDone *events.Event

	runID    string
	workflow string
	session  string
	hist     []events.Event
	byPos    map[int][]int
	resumed  map[string]int
	childEnd map[string]int
	maxPos   int
	parked   int
	pos      int

	cancelReq atomic.Bool
	yieldReq  atomic.Bool
	exiting   bool // the workflow goroutine is unwinding (parked / lost)

	// Run timeout: running time only (waiting for a person, a timer or an
	// event does not count). usedBefore is the running time recorded by
	// earlier executions (attr run_ms); execStart is when this one began.
	runTimeout time.Duration
	usedBefore time.Duration
	execStart  time.Time
	stepGuard  bool // replay-only: never execute a step body

	// Workflow retries: attempt counts run_retry events + 1; positions and
	// decisions of earlier attempts are forgotten (epochStart).
	wfRetry    RetryPolicy
	attempt    int
	retryAt    time.Time
	epochStart int
	ctx        context.Context
	cancel     context.CancelFunc
	outcome    Outcome
	mu         sync.Mutex
}

// NewRunner prepares a runner over a run's history (which must start with
// run_started).
func NewRunner(hist []events.Event, j Journal, fx Effects) (*Runner, error) {
	if len(hist) == 0 || hist[0].Type != events.RunStarted {
		return nil, perr.New(events.CodeRunNotFound, "start the run with `polos run` or client.Start", "history does not start with run_started")
	}
	r := &Runner{Journal: j, Effects: fx, Clock: time.Now,
		byPos: map[int][]int{}, resumed: map[string]int{}, childEnd: map[string]int{}}
	r.runID = hist[0].RunID
	r.workflow = hist[0].Attr("workflow")
	r.wfRetry, r.attempt = workflowRetryFrom(hist[0].Attrs), 1
	if ms, err := strconv.ParseInt(hist[0].Attr(AttrRunTimeoutMs), 10, 64); err == nil && ms > 0 {
		r.runTimeout = time.Duration(ms) * time.Millisecond
	}
	r.session = hist[0].Attr("session")
	r.index(hist)
	return r, nil
}

// History returns the history as the runner knows it (after Run: including
// what it appended).
func (r *Runner) History() []events.Event { return r.hist }

// RequestYield asks the run to stop at its next durable call that would
// execute new work: what completed so far is recorded (a deferred step
// completion is stored first), nothing in flight is cut short, and Run
// returns a Yielded outcome, so another executor continues the run
// without running any step again. For a graceful shutdown.
func (r *Runner) RequestYield() { r.yieldReq.Store(true) }

// RequestCancel cancels the run's context now (a cancel_requested event was
// seen live); the next durable call records the cancellation.
func (r *Runner) RequestCancel() {
	r.cancelReq.Store(true)
	r.mu.Lock()
	if r.cancel != nil {
		r.cancel()
	}
	r.mu.Unlock()
}

func (r *Runner) index(evs []events.Event) {
	for _, e := range evs {
		i := len(r.hist)
		r.hist = append(r.hist, e)
		if e.Pos > 0 {
			r.byPos[e.Pos] = append(r.byPos[e.Pos], i)
			if e.Pos > r.maxPos {
				r.maxPos = e.Pos
			}
		}
		switch e.Type {
		case events.Resumed:
			r.resumed[e.Key] = i
		case events.ChildFinished:
			r.childEnd[e.Key] = i
		case events.CancelRequest:
			r.cancelReq.Store(true)
		case events.RunParked:
			r.parked++
		case events.RunRetry:
			r.byPos, r.maxPos = map[int][]int{}, 0
			r.resumed, r.childEnd = map[string]int{}, map[string]int{}
			r.epochStart, r.attempt = i+1, r.attempt+1
			r.retryAt, _ = time.Parse(time.RFC3339Nano, e.Attr("retry_at"))
		}
		if ms, err := strconv.ParseInt(e.Attr(attrRunMs), 10, 64); err == nil && r.execStart.IsZero() {
			r.usedBefore = time.Duration(ms) * time.Millisecond // from earlier executions only
		}
	}
}

// Run timeout attributes: run_started carries the limit; events appended
// by a run with a limit carry the running time so far, so a later
// execution (after a park or a crash) continues the count.
const (
	AttrRunTimeoutMs = "run_timeout_ms"
	attrRunMs        = "run_ms"
	// CodeRunTimeout: the run used up its running time.
	CodeRunTimeout perr.Code = "RUN_TIMEOUT"
)

func (r *Runner) running() time.Duration {
	return r.usedBefore + r.Clock().Sub(r.execStart)
}

// exitSignal unwinds the workflow goroutine (runtime.Goexit is not a panic:
// workflow code cannot recover it).
func (r *Runner) exit(o Outcome) {
	r.outcome = o
	r.exiting = true
	runtime.Goexit()
}

// CodeUnwinding is returned by durable calls made from deferred functions
// while a parked run unwinds: they are not executed nor recorded.
const CodeUnwinding perr.Code = "RUN_UNWINDING"

func errUnwinding() error {
	return perr.New(CodeUnwinding, "do not make durable calls in deferred functions",
		"durable call made while the run is parking; it was not executed")
}

// Run executes wf from the top. It returns when the workflow completes,
// fails, parks or loses the run.
func (r *Runner) Run(parent context.Context, wf WorkflowFunc) Outcome {
	if o, done := r.terminalOutcome(); done {
		return o
	}
	for i := len(r.hist) - 1; i >= 0; i-- { // parked on non-determinism, no retry granted
		if e := r.hist[i]; e.Type == events.RunParked {
			if _, ok := r.resumed[e.Key]; !ok {
				return Outcome{Kind: Parked, Err: errFromInfo(e.Err)}
			}
			break
		}
	}
	r.execStart = r.Clock()
	r.mu.Lock()
	r.ctx, r.cancel = context.WithCancel(parent)
	if r.cancelReq.Load() {
		r.cancel()
	}
	r.mu.Unlock()
	defer r.cancel()
	if !r.retryAt.IsZero() && r.Clock().Before(r.retryAt) && !r.cancelReq.Load() {
		// Between attempts: nothing runs until the backoff is over.
		if err := r.Effects.ScheduleWake(r.ctxOrBackground(), r.runID, "retry-"+strconv.Itoa(r.attempt), r.retryAt); err != nil {
			return Outcome{Kind: Infrastructure, Err: err}
		}
		return Outcome{Kind: Waiting}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				r.outcome = r.finish(nil, perr.New(CodeStepFailed, "fix the panic in the workflow code", "workflow panicked: %v", p))
			}
		}()
		out, err := wf(&wctx{r: r}, r.hist[0].Data)
		r.outcome = r.finish(out, err)
	}()
	<-done
	return r.outcome
}

func (r *Runner) terminalOutcome() (Outcome, bool) {
	for i := len(r.hist) - 1; i >= 0; i-- {
		e := r.hist[i]
		if !e.Type.IsTerminal() {
			continue
		}
		ev := e
		switch e.Type {
		case events.RunCompleted:
			return Outcome{Kind: Completed, Result: e.Data, Terminal: &ev}, true
		case events.RunFailed:
			return Outcome{Kind: Failed, Err: errFromInfo(e.Err), Terminal: &ev}, true
		default:
			return Outcome{Kind: Cancelled, Terminal: &ev}, true
		}
	}
	return Outcome{}, false
}

// finish records the end of the workflow function. It runs on the workflow
// goroutine, so exit() is allowed.
func (r *Runner) finish(out json.RawMessage, err error) Outcome {
	if r.maxPos > r.pos {
		e := r.hist[r.byPos[r.pos+1][0]]
		r.nondeterminism(r.pos+1, describe(e), "return from the workflow")
	}
	switch {
	case err != nil && (r.cancelReq.Load() || perr.Has(err, CodeCancelled)):
		ev := &events.Event{Type: events.RunCancelled}
		r.append(ev)
		return Outcome{Kind: Cancelled, Terminal: ev}
	case err != nil && r.attempt < r.wfRetry.MaxAttempts && retryable(r.wfRetry, err):
		at := r.Clock().Add(backoff(r.wfRetry, r.attempt)).UTC()
		ev := &events.Event{Type: events.RunRetry, Err: infoFromErr(err), Attrs: map[string]string{
			"attempt": strconv.Itoa(r.attempt + 1), "retry_at": at.Format(time.RFC3339Nano)}}
		r.append(ev)
		r.schedule("retry-"+strconv.Itoa(r.attempt), at)
		return Outcome{Kind: Waiting}
	case err != nil:
		ev := &events.Event{Type: events.RunFailed, Err: infoFromErr(err)}
		r.append(ev)
		return Outcome{Kind: Failed, Err: err, Terminal: ev}
	default:
		if len(out) == 0 {
			out = json.RawMessage("null")
		}
		ev := &events.Event{Type: events.RunCompleted, Data: out}
		r.append(ev)
		return Outcome{Kind: Completed, Result: out, Terminal: ev}
	}
}

// append writes ev, absorbing signals that arrive first. Any other failure
// ends this execution of the run.
func (r *Runner) append(ev *events.Event) {
	if r.runTimeout > 0 && !ev.Type.IsSignal() {
		ev.SetAttr(attrRunMs, strconv.FormatInt(r.running().Milliseconds(), 10))
	}
	r.attachPending(ev)
	for {
		_, err := r.Journal.Append(r.ctxOrBackground(), ev)
		if err == nil {
			stored := events.Expand(*ev)
			r.index(stored)
			if r.OnAppend != nil {
				for i := range stored {
					r.OnAppend(&stored[i])
				}
			}
			return
		}
		switch perr.CodeOf(err) {
		case events.CodeSignalArrived:
			fresh, rerr := r.Journal.Refresh(r.ctxOrBackground())
			if rerr != nil {
				r.exit(Outcome{Kind: Infrastructure, Err: rerr})
			}
			r.index(fresh)
			if r.cancelReq.Load() {
				r.RequestCancel()
			}
			if ev.Type == events.Resumed {
				if _, ok := r.resumed[ev.Key]; ok {
					// Someone decided first: their decision stands. A
					// completion riding on ours waits for the next append.
					if len(ev.Prior) > 0 {
						p := ev.Prior[0]
						r.pendingDone, ev.Prior = &p, ev.Prior[1:]
					}
					return
				}
			}
			continue
		case events.CodeLostOwnership, events.CodeRunExists:
			r.exit(Outcome{Kind: LostOwnership, Err: err})
		case events.CodeNonDeterminism:
			r.park(err)
		default:
			r.exit(Outcome{Kind: Infrastructure, Err: err})
		}
	}
}

// attachPending makes a deferred step completion a prior of ev, so both are
// stored by one append.
func (r *Runner) attachPending(ev *events.Event) {
	if r.pendingDone == nil || ev == r.pendingDone {
		return
	}
	ev.Prior = append([]events.Event{*r.pendingDone}, ev.Prior...)
	r.pendingDone = nil
}

// completeStep records a successful step. The completion is deferred to
// ride on the run's next append (every path that ends or parks an
// execution appends), which makes a step one append instead of two. If a
// completion is already deferred, or the step asked for CompleteNow, it is
// stored at once (together with the deferred one).
func (r *Runner) completeStep(done *events.Event, now bool) {
	done.Time = time.Now().UnixNano()
	if now || r.pendingDone != nil {
		r.append(done)
		return
	}
	r.pendingDone = done
}

// ctxOrBackground: appends must not be cut short by the run's own
// cancellation (recording the cancellation is itself an append).
func (r *Runner) ctxOrBackground() context.Context { return context.WithoutCancel(r.ctx) }

func (r *Runner) park(cause error) {
	ev := &events.Event{Type: events.RunParked, Key: events.ParkedKeyPrefix + strconv.Itoa(r.parked+1), Err: infoFromErr(cause)}
	r.attachPending(ev)
	if _, err := r.Journal.Append(r.ctxOrBackground(), ev); err != nil {
		r.exit(Outcome{Kind: Infrastructure, Err: err})
	}
	r.index(events.Expand(*ev))
	r.exit(Outcome{Kind: Parked, Err: cause})
}

func (r *Runner) nondeterminism(pos int, recorded, attempted string) {
	err := perr.New(events.CodeNonDeterminism,
		fmt.Sprintf("deploy workflow code that makes the same durable calls in the same order as the history (or start a new run), then `polos resume %s %s%d --approve`", r.runID, events.ParkedKeyPrefix, r.parked+1),
		"run %s position %d: history has %s but the code attempted %s", r.runID, pos, recorded, attempted)
	r.park(err)
}

func describe(e events.Event) string {
	kind, name := callOf(e)
	return fmt.Sprintf("%s %q", kind, name)
}

// callOf maps a positional event to the durable call that produced it.
func callOf(e events.Event) (kind, name string) {
	switch e.Type {
	case events.StepStarted, events.StepCompleted, events.StepFailed, events.StepUncertain:
		return "step", e.Name
	case events.ValueRecorded:
		return "value", e.Name
	case events.TimerSet, events.TimerFired:
		return "sleep", e.Name
	case events.Suspended:
		return "suspend", e.Name
	case events.WaitRegistered, events.EventReceived:
		return "wait", e.Name
	case events.ChildStarted:
		return "invoke", e.Name
	}
	return string(e.Type), e.Name
}

// next claims the next position and returns its recorded events after
// checking they come from the same call.
func (r *Runner) next(kind, name string) (int, []events.Event) {
	r.pos++
	p := r.pos
	idx := r.byPos[p]
	if len(idx) == 0 {
		return p, nil
	}
	first := r.hist[idx[0]]
	if k, n := callOf(first); k != kind || n != name {
		r.nondeterminism(p, describe(first), fmt.Sprintf("%s %q", kind, name))
	}
	out := make([]events.Event, len(idx))
	for i, j := range idx {
		out[i] = r.hist[j]
	}
	return p, out
}

// frontier is called before a durable call executes new work.
func (r *Runner) frontier() {
	if r.runTimeout > 0 && r.running() > r.runTimeout {
		err := perr.New(CodeRunTimeout, "raise the run timeout, or split the work into child runs",
			"run %s used %s of running time, its limit is %s (time spent waiting is not counted)", r.runID, r.running().Round(time.Millisecond), r.runTimeout)
		ev := &events.Event{Type: events.RunFailed, Err: infoFromErr(NonRetryable(err))}
		r.append(ev)
		r.exit(Outcome{Kind: Failed, Err: err, Terminal: ev})
	}
	if r.cancelReq.Load() {
		ev := &events.Event{Type: events.RunCancelled}
		r.append(ev)
		r.exit(Outcome{Kind: Cancelled, Terminal: ev})
	}
	if r.yieldReq.Load() {
		if done := r.pendingDone; done != nil {
			r.pendingDone = nil
			r.append(done)
		}
		r.exit(Outcome{Kind: Yielded})
	}
}

func (r *Runner) wait() {
	r.exit(Outcome{Kind: Waiting})
}

// ---- durable calls ----

func (r *Runner) step(name string, fn StepFunc, opts []StepOption) (json.RawMessage, error) {
	o := stepOptions{retry: DefaultRetryPolicy()}
	for _, f := range opts {
		f(&o)
	}
	if o.retry.MaxAttempts < 1 {
		o.retry.MaxAttempts = 1
	}
	p, recs := r.next("step", name)
	key := r.runID + ":" + strconv.Itoa(p)
	attempt, lastFail, retryAfter := 0, time.Time{}, time.Duration(0)
	open := 0 // attempt started without an end
	uncertain := map[int]bool{}
	for _, e := range recs {
		switch e.Type {
		case events.StepCompleted:
			return e.Data, nil
		case events.StepFailed:
			if e.Attr("final") == "true" {
				return nil, errFromInfo(e.Err)
			}
			attempt, lastFail, open = max(attempt, e.Attempt), e.At(), 0
			ms, _ := strconv.ParseInt(e.Attr("retry_after_ms"), 10, 64)
			retryAfter = time.Duration(ms) * time.Millisecond
		case events.StepStarted:
			attempt, open = max(attempt, e.Attempt), e.Attempt
		case events.StepUncertain:
			uncertain[e.Attempt] = true
			open = 0
			attempt = max(attempt, e.Attempt)
		}
	}
	if open > 0 && !uncertain[open] {
		r.frontier()
		r.append(&events.Event{Type: events.StepUncertain, Pos: p, Name: name, Attempt: open, Key: key})
		uncertain[open] = true
	}
	if uncertain[attempt] && o.onUncertain == FailUncertain {
		err := perr.New(CodeOutcomeUncertain, "check the external system for idempotency key "+key+" before retrying",
			"step %q (position %d) started attempt %d and its executor stopped before recording the outcome", name, p, attempt)
		r.append(&events.Event{Type: events.StepFailed, Pos: p, Name: name, Attempt: attempt, Key: key, Err: infoFromErr(err), Attrs: map[string]string{"final": "true"}})
		return nil, err
	}
	for {
		r.frontier()
		attempt++
		if attempt > 1 && !lastFail.IsZero() {
			if d := max(backoff(o.retry, attempt-1), retryAfter) - r.Clock().Sub(lastFail); d > 0 {
				select {
				case <-time.After(d):
				case <-r.ctx.Done():
				}
				r.frontier()
			}
		}
		if !o.noStartMark {
			r.append(&events.Event{Type: events.StepStarted, Pos: p, Name: name, Attempt: attempt, Key: key})
		}
		res, err := r.callStep(fn, key, o.timeout)
		var data []byte
		if err == nil {
			data, err = json.Marshal(res)
			if err != nil {
				err = NonRetryable(perr.Wrap(err, CodeBadPayload, "return a value that encoding/json can marshal", "result of step %q", name))
			}
		}
		if err == nil {
			r.completeStep(&events.Event{Type: events.StepCompleted, Pos: p, Name: name, Attempt: attempt, Data: data}, o.completeNow)
			return data, nil
		}
		final := attempt >= o.retry.MaxAttempts || !retryable(o.retry, err) || r.cancelReq.Load()
		ev := &events.Event{Type: events.StepFailed, Pos: p, Name: name, Attempt: attempt, Err: infoFromErr(err)}
		if final {
			ev.SetAttr("final", "true")
		}
		retryAfter = 0
		if o.retry.RetryAfter != nil {
			if retryAfter = o.retry.RetryAfter(err); retryAfter > 0 {
				ev.SetAttr("retry_after_ms", strconv.FormatInt(retryAfter.Milliseconds(), 10))
			}
		}
		r.append(ev)
		if final {
			return nil, errFromInfo(ev.Err)
		}
		lastFail = ev.At()
	}
}

func (r *Runner) callStep(fn StepFunc, key string, timeout time.Duration) (res any, err error) {
	if r.runTimeout > 0 {
		if left := r.runTimeout - r.running(); timeout == 0 || left < timeout {
			timeout = max(left, time.Millisecond)
		}
	}
	if r.stepGuard {
		r.exit(Outcome{Kind: Infrastructure, Err: perr.New(CodeReplayIncomplete, "", "step %s has no recorded result in this history", key)})
	}
	ctx := r.ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("step panicked: %v", p)
		}
	}()
	return fn(ctx, key)
}

func backoff(p RetryPolicy, failures int) time.Duration {
	if p.InitialInterval <= 0 {
		return 0
	}
	mult := p.Multiplier
	if mult < 1 {
		mult = 1
	}
	d := float64(p.InitialInterval) * math.Pow(mult, float64(failures-1))
	if p.MaxInterval > 0 && d > float64(p.MaxInterval) {
		d = float64(p.MaxInterval)
	}
	// Full jitter in [d/2, d]: spreads retries without collapsing to zero.
	return time.Duration(d/2 + mrand.Float64()*d/2)
}

func retryable(p RetryPolicy, err error) bool {
	var nr nonRetryable
	if errors.As(err, &nr) {
		return false
	}
	if p.Retryable != nil {
		return p.Retryable(err)
	}
	return true
}

func (r *Runner) value(name string, gen func() any) json.RawMessage {
	p, recs := r.next("value", name)
	if len(recs) > 0 {
		return recs[0].Data
	}
	r.frontier()
	data, _ := json.Marshal(gen())
	r.append(&events.Event{Type: events.ValueRecorded, Pos: p, Name: name, Data: data})
	return data
}

func (r *Runner) sleep(d time.Duration) error {
	p, recs := r.next("sleep", "sleep")
	var fireAt time.Time
	for _, e := range recs {
		if e.Type == events.TimerFired {
			return nil
		}
		if e.Type == events.TimerSet {
			fireAt, _ = time.Parse(time.RFC3339Nano, e.Attr("fire_at"))
		}
	}
	if fireAt.IsZero() {
		r.frontier()
		fireAt = r.Clock().Add(d).UTC()
		r.append(&events.Event{Type: events.TimerSet, Pos: p, Name: "sleep", Attrs: map[string]string{"fire_at": fireAt.Format(time.RFC3339Nano)}})
	}
	if !r.Clock().Before(fireAt) {
		r.append(&events.Event{Type: events.TimerFired, Pos: p, Name: "sleep"})
		return nil
	}
	r.frontier()
	r.schedule("timer-"+strconv.Itoa(p), fireAt)
	r.wait()
	return nil
}

func (r *Runner) schedule(key string, at time.Time) {
	if err := r.Effects.ScheduleWake(r.ctxOrBackground(), r.runID, key, at); err != nil {
		r.exit(Outcome{Kind: Infrastructure, Err: err})
	}
}

func (r *Runner) suspend(key string, payload any, opts []SuspendOption) (json.RawMessage, error) {
	var o suspendOptions
	for _, f := range opts {
		f(&o)
	}
	if err := events.ValidateID("step key", key); err != nil {
		return nil, err
	}
	p, recs := r.next("suspend", key)
	var timeoutAt time.Time
	if len(recs) == 0 {
		for _, e := range r.hist[r.epochStart:] {
			if e.Type == events.Suspended && e.Key == key {
				return nil, perr.New(CodeDuplicateStepKey, "give every Suspend in a run its own key",
					"step key %q is already used at position %d", key, e.Pos)
			}
		}
		r.frontier()
		data, err := json.Marshal(payload)
		if err != nil {
			return nil, perr.Wrap(err, CodeBadPayload, "pass a payload that encoding/json can marshal", "suspend %q", key)
		}
		ev := &events.Event{Type: events.Suspended, Pos: p, Name: key, Key: key, Data: data}
		if o.timeout > 0 {
			timeoutAt = r.Clock().Add(o.timeout).UTC()
			ev.SetAttr("timeout_at", timeoutAt.Format(time.RFC3339Nano))
		}
		r.append(ev)
	} else {
		timeoutAt, _ = time.Parse(time.RFC3339Nano, recs[0].Attr("timeout_at"))
	}
	if i, ok := r.resumed[key]; ok {
		return resumeResult(r.hist[i])
	}
	if !timeoutAt.IsZero() && !r.Clock().Before(timeoutAt) {
		ev := &events.Event{Type: events.Resumed, Key: key, Attrs: map[string]string{"timed_out": "true", "decided_by": "timeout"}}
		r.append(ev) // a decision that landed first wins (append returns, resumed[key] set)
		return resumeResult(r.hist[r.resumed[key]])
	}
	r.frontier()
	if !timeoutAt.IsZero() {
		r.schedule("suspend-"+key, timeoutAt)
	}
	r.wait()
	return nil, nil
}

func resumeResult(e events.Event) (json.RawMessage, error) {
	if e.Attr("timed_out") == "true" {
		return nil, perr.New(CodeWaitTimeout, "", "nobody decided step %q before its timeout", e.Key)
	}
	return e.Data, nil
}

func (r *Runner) waitForEvent(topic string, timeout time.Duration) (json.RawMessage, error) {
	if err := validateTopic(topic); err != nil {
		return nil, err
	}
	p, recs := r.next("wait", "event:"+topic)
	var after uint64
	var timeoutAt time.Time
	if len(recs) == 0 {
		r.frontier()
		seq, err := r.Effects.TopicLastSeq(r.ctxOrBackground(), topic)
		if err != nil {
			r.exit(Outcome{Kind: Infrastructure, Err: err})
		}
		after = seq
		ev := &events.Event{Type: events.WaitRegistered, Pos: p, Name: "event:" + topic, Key: topic, Attrs: map[string]string{"after_seq": strconv.FormatUint(seq, 10)}}
		if timeout > 0 {
			timeoutAt = r.Clock().Add(timeout).UTC()
			ev.SetAttr("timeout_at", timeoutAt.Format(time.RFC3339Nano))
		}
		r.append(ev)
	} else {
		for _, e := range recs {
			if e.Type == events.EventReceived {
				if e.Attr("timed_out") == "true" {
					return nil, perr.New(CodeWaitTimeout, "", "no event on topic %q before the timeout", topic)
				}
				return e.Data, nil
			}
		}
		after, _ = strconv.ParseUint(recs[0].Attr("after_seq"), 10, 64)
		timeoutAt, _ = time.Parse(time.RFC3339Nano, recs[0].Attr("timeout_at"))
	}
	if err := r.Effects.RegisterWaiter(r.ctxOrBackground(), topic, r.runID); err != nil {
		r.exit(Outcome{Kind: Infrastructure, Err: err})
	}
	data, found, err := r.Effects.TopicEventAfter(r.ctxOrBackground(), topic, after)
	if err != nil {
		r.exit(Outcome{Kind: Infrastructure, Err: err})
	}
	if found {
		r.append(&events.Event{Type: events.EventReceived, Pos: p, Name: "event:" + topic, Key: topic, Data: data})
		return data, nil
	}
	if !timeoutAt.IsZero() && !r.Clock().Before(timeoutAt) {
		r.append(&events.Event{Type: events.EventReceived, Pos: p, Name: "event:" + topic, Key: topic, Attrs: map[string]string{"timed_out": "true"}})
		return nil, perr.New(CodeWaitTimeout, "", "no event on topic %q before the timeout", topic)
	}
	r.frontier()
	if !timeoutAt.IsZero() {
		r.schedule("event-"+strconv.Itoa(p), timeoutAt)
	}
	r.wait()
	return nil, nil
}

func validateTopic(topic string) error {
	for _, tok := range strings.Split(topic, ".") {
		if err := events.ValidateID("event topic token", tok); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) invoke(workflow string, input any, opts []InvokeOption) (string, error) {
	var o invokeOptions
	for _, f := range opts {
		f(&o)
	}
	p, recs := r.next("invoke", workflow)
	if len(recs) > 0 {
		return recs[0].Key, nil
	}
	r.frontier()
	id := o.id
	if id == "" {
		id = r.runID + "-c" + strconv.Itoa(p)
	}
	if err := events.ValidateID("child run ID", id); err != nil {
		return "", err
	}
	data, err := json.Marshal(input)
	if err != nil {
		return "", perr.Wrap(err, CodeBadPayload, "pass an input that encoding/json can marshal", "invoke %q", workflow)
	}
	if err := r.Effects.StartChild(r.ctxOrBackground(), r.runID, id, workflow, data, o.queue); err != nil {
		r.exit(Outcome{Kind: Infrastructure, Err: err})
	}
	r.append(&events.Event{Type: events.ChildStarted, Pos: p, Name: workflow, Key: id})
	return id, nil
}

func (r *Runner) waitChild(childID string) (json.RawMessage, error) {
	p, recs := r.next("wait", "child:"+childID)
	if len(recs) == 0 {
		r.frontier()
		r.append(&events.Event{Type: events.WaitRegistered, Pos: p, Name: "child:" + childID, Key: "child-" + childID, Attrs: map[string]string{"child": childID}})
	}
	if i, ok := r.childEnd[childID]; ok {
		return childResult(r.hist[i])
	}
	term, err := r.Effects.ChildOutcome(r.ctxOrBackground(), childID)
	if err != nil {
		r.exit(Outcome{Kind: Infrastructure, Err: err})
	}
	if term != nil {
		ev := &events.Event{Type: events.ChildFinished, Key: childID, Data: term.Data, Err: term.Err, Attrs: map[string]string{"status": string(term.Type)}}
		if _, ok := r.childEnd[childID]; !ok {
			r.append(ev)
		}
		return childResult(r.hist[r.childEnd[childID]])
	}
	r.frontier()
	r.wait()
	return nil, nil
}

func childResult(e events.Event) (json.RawMessage, error) {
	switch e.Attr("status") {
	case string(events.RunCompleted), "":
		if e.Err == nil {
			return e.Data, nil
		}
	}
	msg := "child run " + e.Key + " " + strings.TrimPrefix(e.Attr("status"), "run_")
	if e.Err != nil {
		msg += ": " + e.Err.Message
	}
	return nil, perr.New(CodeChildFailed, "", "%s", msg)
}

func infoFromErr(err error) *events.ErrorInfo {
	if err == nil {
		return nil
	}
	var nr nonRetryable
	return &events.ErrorInfo{Code: string(perr.CodeOf(err)), Message: err.Error(), Retryable: !errors.As(err, &nr)}
}

// RecordedError is a step or run error read back from history.
type RecordedError struct{ Info events.ErrorInfo }

func (e *RecordedError) Error() string { return e.Info.Message }

// Code returns the recorded error code.
func (e *RecordedError) Code() string { return e.Info.Code }

func errFromInfo(i *events.ErrorInfo) error {
	if i == nil {
		return nil
	}
	return &RecordedError{Info: *i}
}

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func annotation(name string, attrs map[string]string) *events.Event {
	return &events.Event{Type: events.Annotation, Name: name, Attrs: attrs}
}
