// Package executor advances runs: it pulls "advance run X" tasks from the
// work-queue stream through one durable consumer shared by every executor
// of a namespace, replays the run's history through its workflow code, and
// lets the code append what comes next. Executors hold no state that
// matters: kill one and another picks its tasks up after the ack wait.
package executor

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/ratelimit"
	"github.com/polos-run/polos/replay"
)

// Defaults.
const (
	DefaultConcurrency = 64   // runs one executor advances at once
	DefaultCacheSize   = 1024 // run histories kept in memory
	DefaultRetryDelay  = 500 * time.Millisecond
	DefaultBusyDelay   = 100 * time.Millisecond // retry of a task whose run another executor holds
	// EnvCacheOff, set to "1", evicts every cached history after every
	// event: the test suite must pass in both modes.
	EnvCacheOff = "POLOS_CACHE_OFF"
	// EnvGroupCommit, set to "1", turns group commit on (see Options).
	EnvGroupCommit = "POLOS_GROUP_COMMIT"
)

// Registry resolves workflow names to code.
type Registry interface {
	Lookup(name string) (replay.WorkflowFunc, bool)
}

// Options configure an executor.
type Options struct {
	Namespace   string
	ID          string // writer identity in events; defaults to host-pid-random
	Concurrency int
	CacheSize   int
	CacheOff    bool // evict after every event (also EnvCacheOff=1)
	// GroupCommit lets appends of different runs that arrive together share
	// one atomic batch per run partition instead of being stored one by
	// one. Off by default: it saves round trips, not fsyncs, and measured
	// no faster than single appends once runs were partitioned and a step
	// was one append (docs/adr/0004-group-commit.md). Also
	// POLOS_GROUP_COMMIT=1.
	GroupCommit bool
	// NoDamageWatch turns off the watch of run subjects for unreadable
	// messages (watchDamage); a damaged run is then parked by its next
	// task only.
	NoDamageWatch bool
	Logger        *slog.Logger
	// BuildID identifies this executor's code (default
	// protocol.DefaultBuildID). A run is pinned to the build of the first
	// executor that advances it (attribute build_id); an executor of
	// another build hands its tasks back while a live executor of the
	// pinned build exists, and continues the run when none does.
	BuildID string
	// Hooks for tests and metrics.
	OnOutcome func(runID string, o replay.Outcome)
}

// Executor advances runs of one namespace.
type Executor struct {
	store *events.Store
	js    jetstream.JetStream
	nc    *nats.Conn
	reg   Registry
	opts  Options
	log   *slog.Logger

	locksMu sync.Mutex
	locks   map[string]*runLock
	cache   *historyCache
	slots   *ratelimit.Slots

	held   runSet // runs this executor holds leases on (liveness answers)
	probes struct {
		once sync.Once
		err  error
	}
	active   runners     // runs executing now (asked to yield at shutdown)
	pulling  atomic.Bool // Run is pulling tasks (Ready)
	renewals renewHealth // whether lease renewals reach the store
	reported *onceSet    // what was logged already (damage, unknown workflows)
	// storeLogged: store fault codes logged in the last
	// protocol.DefaultStoreFaultLogEvery (one line per code, not per task).
	storeLogged *onceSet
	kicked      *onceSet // damaged runs the watch queued recently
	stats       struct{ advances, acked, retried, terminated atomic.Int64 }
}

// New returns an executor; call Run to start it.
func New(nc *nats.Conn, js jetstream.JetStream, reg Registry, o Options) (*Executor, error) {
	if o.Namespace == "" {
		o.Namespace = events.DefaultNamespace
	}
	if o.ID == "" {
		h, _ := os.Hostname()
		o.ID = "exec-" + h + "-" + itoa(os.Getpid()) + "-" + nats.NewInbox()[7:13]
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	if os.Getenv(EnvCacheOff) == "1" {
		o.CacheOff = true
	}
	if o.BuildID == "" {
		o.BuildID = protocol.DefaultBuildID()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	st, err := events.NewStore(nc, js, o.Namespace, o.ID)
	if err != nil {
		return nil, err
	}
	if o.GroupCommit || os.Getenv(EnvGroupCommit) == "1" {
		st.EnableGroupCommit()
	}
	return &Executor{store: st, js: js, nc: nc, reg: reg, opts: o, log: o.Logger, cache: newHistoryCache(o.CacheSize), locks: map[string]*runLock{}, slots: ratelimit.NewSlots(js, o.Namespace),
		reported: newOnceSet(DefaultReportedSetSize, 0), storeLogged: newOnceSet(DefaultReportedSetSize, protocol.DefaultStoreFaultLogEvery), kicked: newOnceSet(DefaultReportedSetSize, damageKickEvery)}, nil
}

// answerProbes subscribes, once, to this executor's liveness subject. The
// subscription lasts as long as the connection: an executor that stopped
// holds no lease and answers "not holding", so takers need not wait.
func (e *Executor) answerProbes() error {
	e.probes.once.Do(func() {
		if _, err := protocol.AnswerProbes(e.nc, e.opts.Namespace, e.opts.ID, e.held.has); err != nil {
			e.probes.err = perr.Wrap(err, events.CodeStoreIO, "check the NATS connection and the executor's permissions", "cannot answer liveness probes")
		}
	})
	return e.probes.err
}

// CodeNotPulling: the executor is not pulling tasks (starting, or stopped).
const CodeNotPulling perr.Code = "EXECUTOR_NOT_PULLING"

// Ready reports whether the executor is pulling tasks and its lease
// renewals reach the store (what a readiness probe asks).
func (e *Executor) Ready() error {
	if !e.pulling.Load() {
		return perr.New(CodeNotPulling, "wait for it to start, or read the log for why it stopped", "executor %s is not pulling tasks", e.opts.ID)
	}
	if failing, d, cause := e.renewals.failingFor(); failing {
		return protocol.StoreError(cause, "executor %s: lease renewals have failed for %s", e.opts.ID, d.Round(time.Millisecond))
	}
	return nil
}

// Store exposes the executor's event store (tests inject faults through it).
func (e *Executor) Store() *events.Store { return e.store }

// ID is the executor's writer identity.
func (e *Executor) ID() string { return e.opts.ID }

// Run pulls and processes tasks until ctx is cancelled. On cancellation it
// stops pulling, and each run in flight stops at its next durable call
// (the step it is executing finishes and is recorded; replay.Yielded): its
// task is handed back at once, for another executor to continue.
func (e *Executor) Run(ctx context.Context) error {
	cons, err := e.js.Consumer(ctx, protocol.TasksStream, protocol.ExecutorConsumer(e.opts.Namespace))
	if err != nil {
		return protocol.Unavailable(err, events.CodeStoreIO, "cannot open the task consumer")
	}
	// Liveness before work: a run this executor takes is never handed to
	// another while it answers probes (lease.go).
	if err := e.answerProbes(); err != nil {
		return err
	}
	var workflows []string
	if names, ok := e.reg.(interface{ Names() []string }); ok {
		workflows = names.Names()
	}
	presence, err := protocol.AnswerPresence(e.nc, e.opts.Namespace, workflows, e.opts.BuildID)
	if err != nil {
		return perr.Wrap(err, events.CodeStoreIO, "", "cannot answer presence probes")
	}
	defer func() {
		for _, s := range presence {
			_ = s.Unsubscribe()
		}
	}()
	iter, err := cons.Messages(jetstream.PullMaxMessages(e.opts.Concurrency), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return perr.Wrap(err, events.CodeStoreIO, "", "cannot pull tasks")
	}
	e.pulling.Store(true)
	defer e.pulling.Store(false)
	go func() {
		<-ctx.Done()
		iter.Drain()
		// Shutting down: runs in flight stop at their next durable call
		// and go to other executors at once (none of their steps is cut
		// short or run twice).
		e.active.yieldAll()
	}()
	if !e.opts.NoDamageWatch {
		stopWatch, err := e.watchDamage(ctx)
		if err != nil {
			iter.Stop()
			return err
		}
		defer stopWatch()
	}
	sem := make(chan struct{}, e.opts.Concurrency)
	var wg sync.WaitGroup
	for {
		msg, err := iter.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				break
			}
			e.log.Warn("task pull failed; retrying", "err", err)
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			e.handle(context.WithoutCancel(ctx), msg)
		}()
	}
	wg.Wait()
	return nil
}

func (e *Executor) handle(ctx context.Context, msg jetstream.Msg) {
	var t protocol.Task
	if err := json.Unmarshal(msg.Data(), &t); err != nil || events.ValidateID("run ID", t.RunID) != nil {
		e.log.Error("dropping malformed task", "subject", msg.Subject(), "size", len(msg.Data()), "payload", preview(msg.Data()))
		e.settle(msg, settleTerm, 0)
		return
	}
	if failing, d, cause := e.renewals.failingFor(); failing {
		// The store does not take our lease renewals: start nothing new
		// until it does (runs in flight keep going; nobody takes them
		// while this executor answers probes).
		if e.reported.first("renewals-failing", time.Now()) {
			e.log.Error("lease renewals are failing; this executor hands new tasks back until the store answers again",
				"for", d.Round(time.Millisecond).String(), "err", cause)
		}
		e.settle(msg, settleNak, DefaultRetryDelay)
		return
	}
	stop := heartbeat(msg)
	defer stop()
	o, err := e.advance(ctx, t.RunID, protocol.QueueOfTaskSubject(msg.Subject()))
	var deliveries uint64 = 1
	if md, err := msg.Metadata(); err == nil {
		deliveries = md.NumDelivered
	}
	how, delay := e.verdict(t.RunID, o, err, deliveries)
	e.settle(msg, how, delay)
}

// How a task is settled.
type settlement int

const (
	settleAck  settlement = iota // done
	settleNak                    // offered again after a delay
	settleTerm                   // never offered again
)

// verdict decides what becomes of the task that advanced runID with
// outcome o and error err, and logs what an operator must know, once.
func (e *Executor) verdict(runID string, o replay.Outcome, err error, deliveries uint64) (settlement, time.Duration) {
	if c := perr.CodeOf(err); c == CodeRunBusy || c == CodeOtherBuild {
		return settleNak, DefaultBusyDelay
	}
	if ahead, ok := waitingForSlot(err); ok {
		return settleNak, slotRetryDelay(ahead)
	}
	if err == nil && o.Kind == replay.Yielded {
		return settleNak, 0 // another executor continues it now
	}
	if err == nil && o.Kind != replay.Infrastructure {
		return settleAck, 0
	}
	if err == nil {
		err = o.Err
	}
	var unknown *unknownWorkflow
	switch code := perr.CodeOf(err); {
	case code == events.CodeRunDamaged:
		return settleTerm, 0 // logged once by damaged
	case code == events.CodeRunNotFound:
		e.log.Error("dropping a task for a run with no history", "run", runID, "err", err)
		return settleTerm, 0
	case code == replay.CodeWorkflowNotFound && errors.As(err, &unknown):
		// Another executor may serve it: hand the task back, slowly.
		if e.reported.first("workflow:"+unknown.name, time.Now()) {
			e.log.Error("tasks for a workflow this executor does not serve are handed back, offered again after "+DefaultBusyDelay.String()+" doubling up to "+DefaultUnknownWorkflowDelay.String()+" (logged once per workflow)",
				"workflow", unknown.name, "run", runID, "err", err)
		}
		if protocol.AnyoneServes(context.Background(), e.nc, e.opts.Namespace, unknown.name) {
			return settleNak, DefaultBusyDelay // a live executor has it: let it take the task
		}
		return settleNak, unknownWorkflowDelay(deliveries)
	}
	if code := perr.CodeOf(err); protocol.IsStoreFaultCode(code) {
		// The store cannot take writes (polosd's log names the cause once):
		// every task would say the same, so one line per code per minute.
		if e.storeLogged.first(string(code), time.Now()) {
			e.log.Warn("advancing runs fails: the store does not take writes; tasks are retried (logged once a minute)", "code", code, "run", runID, "err", err)
		}
		return settleNak, DefaultRetryDelay
	}
	e.log.Warn("advancing run failed; task will be retried", "run", runID, "err", err)
	return settleNak, DefaultRetryDelay
}

func (e *Executor) settle(msg jetstream.Msg, how settlement, delay time.Duration) {
	switch how {
	case settleAck:
		e.stats.acked.Add(1)
		_ = msg.Ack()
	case settleNak:
		e.stats.retried.Add(1)
		_ = msg.NakWithDelay(delay)
	case settleTerm:
		e.stats.terminated.Add(1)
		_ = msg.Term()
	}
}

// unknownWorkflow is the cause of a CodeWorkflowNotFound error of Advance.
type unknownWorkflow struct{ name string }

func (u *unknownWorkflow) Error() string {
	return "workflow " + strconv.Quote(u.name) + " is not registered here"
}

// preview is a loggable prefix of a payload of any size.
func preview(b []byte) string {
	const n = 64
	if len(b) <= n {
		return strconv.Quote(string(b))
	}
	return strconv.Quote(string(b[:n])) + "..."
}

func heartbeat(msg jetstream.Msg) func() {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(protocol.DefaultTaskAckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// lock serialises work on one run inside this process; the entry is
// removed when nobody holds or waits for it, so the map does not grow with
// every run ever seen.
func (e *Executor) lock(runID string) (unlock func()) {
	e.locksMu.Lock()
	l, ok := e.locks[runID]
	if !ok {
		l = &runLock{}
		e.locks[runID] = l
	}
	l.refs++
	e.locksMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		e.locksMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(e.locks, runID)
		}
		e.locksMu.Unlock()
	}
}

// runners are the runs this executor is executing, by run ID.
type runners struct {
	mu sync.Mutex
	m  map[string]*replay.Runner
	// yielding: every runner added from now on is asked to yield at once.
	yielding bool
}

func (a *runners) add(runID string, r *replay.Runner) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]*replay.Runner{}
	}
	a.m[runID] = r
	if a.yielding {
		r.RequestYield()
	}
}

func (a *runners) remove(runID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.m, runID)
}

func (a *runners) yieldAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.yielding = true
	for _, r := range a.m {
		r.RequestYield()
	}
}

type runLock struct {
	mu   sync.Mutex
	refs int
}

// Advance replays run runID and executes it until it completes, fails,
// waits or loses ownership. It is what a task triggers; exported for tests
// and for in-process drivers.
//
// It first takes the run's lease; if another live executor holds it, it
// returns a CodeRunBusy error and does nothing.
func (e *Executor) Advance(ctx context.Context, runID string) (replay.Outcome, error) {
	return e.advance(ctx, runID, "")
}

// advance is Advance for a task of queue (recorded in the lease, so a
// reaper can queue the run again without reading its history).
func (e *Executor) advance(ctx context.Context, runID, queue string) (replay.Outcome, error) {
	e.stats.advances.Add(1)
	unlock := e.lock(runID)
	defer unlock()
	l, err := e.acquireLease(ctx, runID, queue)
	if err != nil {
		return replay.Outcome{}, err
	}
	defer l.release(&e.held, runID)
	cold := e.cache.get(runID) == nil
	hist, err := e.history(ctx, runID)
	if err != nil {
		return replay.Outcome{}, err
	}
	if len(hist) == 0 {
		return replay.Outcome{}, perr.New(events.CodeRunNotFound, "", "run %s has no history", runID)
	}
	vet := new(events.Vetter)
	if hist = vet.Vet(hist); isDamaged(hist) {
		return e.damaged(ctx, runID, hist)
	}
	if cold {
		checked, err := e.checkIndex(ctx, runID, hist)
		if err != nil {
			return replay.Outcome{}, err
		}
		if len(checked) == 0 {
			return replay.Outcome{}, perr.New(events.CodeRunNotFound, "", "run %s has no history", runID)
		}
		if &checked[0] != &hist[0] { // read again: vet what was read
			vet = new(events.Vetter)
			if hist = vet.Vet(checked); isDamaged(hist) {
				return e.damaged(ctx, runID, hist)
			}
		}
	}
	name := hist[0].Attr("workflow")
	wf, ok := e.reg.Lookup(name)
	if !ok {
		return replay.Outcome{}, perr.Wrap(&unknownWorkflow{name: name}, replay.CodeWorkflowNotFound, "register the workflow in this executor (polos.yaml or polos.Register)",
			"run %s needs workflow %q, which this executor does not have", runID, name)
	}
	pinned := events.BuildOf(hist)
	if pinned != "" && pinned != e.opts.BuildID {
		if protocol.AnyoneRuns(ctx, e.nc, e.opts.Namespace, pinned) {
			return replay.Outcome{}, perr.New(CodeOtherBuild, "none needed: an executor of that build takes the task",
				"run %s is pinned to build %s; this executor runs build %s", runID, pinned, e.opts.BuildID)
		}
		if e.reported.first("build:"+pinned, time.Now()) {
			e.log.Warn("no live executor of a run's build: this one continues it (replay finds any incompatibility and parks the run)",
				"run", runID, "pinned", pinned, "build", e.opts.BuildID)
		}
	}
	slot, hist, err := e.takeSlot(ctx, runID, hist)
	if err != nil {
		return replay.Outcome{}, err
	}
	if slot != nil {
		defer func() { hist = e.releaseSlot(ctx, runID, slot, hist, false) }()
	}
	j := &journal{store: e.store, runID: runID, last: events.TipOf(hist), vet: vet}
	if pinned == "" {
		j.pin = e.opts.BuildID
	}
	fx := &effects{store: e.store, js: e.js, ns: e.opts.Namespace, queue: hist[0].Attr("queue")}
	r, err := replay.NewRunner(hist, j, fx)
	if err != nil {
		return replay.Outcome{}, err
	}
	r.Namespace = e.opts.Namespace
	// A cancel request published while a step runs cancels the step's
	// context (only a real one: anything else on that subject is damage,
	// found at the next append).
	sub, _ := e.nc.Subscribe(e.store.Subject(runID, events.CancelRequest), func(m *nats.Msg) {
		if ev, err := events.Decode(m.Data); err == nil && ev.Type == events.CancelRequest && ev.RunID == runID {
			r.RequestCancel()
		}
	})
	e.active.add(runID, r)
	o := r.Run(ctx, wf)
	e.active.remove(runID)
	if sub != nil {
		_ = sub.Unsubscribe()
	}
	hist = r.History()
	damaged := e.recheckDamage(ctx, runID, o)
	if slot != nil {
		hist = e.releaseSlot(ctx, runID, slot, hist, o.Kind == replay.LostOwnership || damaged != nil)
	}
	if damaged != nil {
		return e.damaged(ctx, runID, damaged)
	}
	switch o.Kind {
	case replay.LostOwnership, replay.Infrastructure, replay.Yielded:
		e.cache.drop(runID)
	default:
		if e.opts.CacheOff {
			e.cache.drop(runID)
		} else {
			e.cache.put(runID, hist)
		}
		e.afterRun(ctx, hist, o)
	}
	if e.opts.OnOutcome != nil {
		e.opts.OnOutcome(runID, o)
	}
	return o, nil
}

// afterRun updates the derived run index and tells a parent its child ended.
func (e *Executor) afterRun(ctx context.Context, hist []events.Event, o replay.Outcome) {
	sum := events.Summarize(hist)
	sum.Namespace = e.opts.Namespace
	if err := PutIndex(ctx, e.js, sum); err != nil {
		e.log.Warn("run index update failed (derived; rebuilt on next change)", "run", sum.ID, "err", err)
	}
	if o.Terminal == nil || sum.Parent == "" {
		return
	}
	if err := NotifyParent(ctx, e.store, e.js, sum.Parent, sum.ID, o.Terminal); err != nil {
		e.log.Warn("notifying parent failed; the parent checks its children when it replays", "parent", sum.Parent, "err", err)
	}
}

// NotifyParent appends child_finished to the parent run (once) and queues it.
func NotifyParent(ctx context.Context, st *events.Store, js jetstream.JetStream, parentID, childID string, term *events.Event) error {
	ev := &events.Event{Type: events.ChildFinished, Key: childID, Data: term.Data, Err: term.Err, Attrs: map[string]string{"status": string(term.Type)}}
	var queue string
	seq, _, err := st.AppendSignal(ctx, parentID, ev, func(h []events.Event) error {
		if h = events.Vet(h); isDamaged(h) {
			// Nothing is appended after unreadable bytes; the parent, once
			// restored, finds its child's end when it replays.
			return perr.New(events.CodeRunDamaged, "restore or cancel the parent run "+parentID, "parent run %s is damaged; child %s not reported", parentID, childID)
		}
		queue = h[0].Attr("queue")
		for _, x := range h {
			if x.Type == events.ChildFinished && x.Key == childID {
				return errAlreadyNotified
			}
		}
		return nil
	})
	if errors.Is(err, errAlreadyNotified) {
		return nil
	}
	if err != nil {
		return err
	}
	return protocol.Enqueue(ctx, js, st.Namespace(), queue, parentID, "child:"+childID, protocol.WakeDedupe(parentID, seq))
}

var errAlreadyNotified = errors.New("already notified")

// PutIndex writes a run's summary to the derived run index (index.Put:
// not acknowledged; rewritten on the run's next change and by a rebuild).
func PutIndex(ctx context.Context, js jetstream.JetStream, sum events.Summary) error {
	return index.Put(ctx, js, sum)
}

func (e *Executor) history(ctx context.Context, runID string) ([]events.Event, error) {
	cached := e.cache.get(runID)
	var after uint64
	if n := len(cached); n > 0 {
		after = cached[n-1].Seq
	}
	fresh, err := e.store.Load(ctx, runID, after)
	if err != nil {
		return nil, err
	}
	if len(cached) == 0 {
		return fresh, nil
	}
	out := make([]events.Event, 0, len(cached)+len(fresh))
	return append(append(out, cached...), fresh...), nil
}

// journal implements replay.Journal for one run. It vets what others
// append (signals) as it is read, so the runner never sees an unreadable
// message: Refresh fails with CodeRunDamaged instead, which ends the
// execution; the executor then parks the run.
type journal struct {
	store *events.Store
	runID string
	last  events.Tip     // the last message of the run this journal has seen or written
	vet   *events.Vetter // has seen the history up to last
	pin   string         // build ID to record on the next append (the run has none yet)
}

func (j *journal) Append(ctx context.Context, ev *events.Event) (uint64, error) {
	if j.pin != "" {
		ev.SetAttr(events.AttrBuildID, j.pin)
	}
	seq, err := j.store.Append(ctx, j.runID, j.last, ev)
	if err == nil {
		j.pin = ""
		j.last = events.TipOfEvent(ev)
		j.vet.Check(events.Expand(*ev))
	}
	return seq, err
}

func (j *journal) Refresh(ctx context.Context) ([]events.Event, error) {
	evs, err := j.store.Load(ctx, j.runID, j.last.Seq)
	if err != nil || len(evs) == 0 {
		return evs, err
	}
	for i := 0; i < len(evs); {
		n := 1
		for i+n < len(evs) && evs[i+n].Seq == evs[i].Seq {
			n++
		}
		if got := j.vet.Check(evs[i : i+n]); got[0].Type == events.Unreadable {
			d, _ := events.DamageOf(got[0])
			return nil, perr.New(events.CodeRunDamaged, "none here: the run is parked as damaged", "run %s: %s", j.runID, d)
		}
		i += n
	}
	j.last = events.TipOf(evs)
	return evs, nil
}

// historyCache is an LRU of run histories. It is an optimisation only.
type historyCache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[string]*list.Element
}

type cacheEntry struct {
	runID string
	hist  []events.Event
}

func newHistoryCache(n int) *historyCache {
	return &historyCache{max: n, ll: list.New(), items: map[string]*list.Element{}}
}

func (c *historyCache) get(runID string) []events.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[runID]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*cacheEntry).hist
	}
	return nil
}

func (c *historyCache) put(runID string, hist []events.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[runID]; ok {
		el.Value.(*cacheEntry).hist = hist
		c.ll.MoveToFront(el)
		return
	}
	c.items[runID] = c.ll.PushFront(&cacheEntry{runID: runID, hist: hist})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).runID)
	}
}

func (c *historyCache) drop(runID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[runID]; ok {
		c.ll.Remove(el)
		delete(c.items, runID)
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
