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
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/perr"
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
	Logger      *slog.Logger
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
	return &Executor{store: st, js: js, nc: nc, reg: reg, opts: o, log: o.Logger, cache: newHistoryCache(o.CacheSize), locks: map[string]*runLock{}, slots: ratelimit.NewSlots(js, o.Namespace)}, nil
}

// Store exposes the executor's event store (tests inject faults through it).
func (e *Executor) Store() *events.Store { return e.store }

// ID is the executor's writer identity.
func (e *Executor) ID() string { return e.opts.ID }

// Run pulls and processes tasks until ctx is cancelled. On cancellation it
// stops pulling, lets runs in flight finish their current work, and
// returns; tasks it had not finished are redelivered to another executor.
func (e *Executor) Run(ctx context.Context) error {
	cons, err := e.js.Consumer(ctx, protocol.TasksStream, protocol.ExecutorConsumer(e.opts.Namespace))
	if err != nil {
		return perr.Wrap(err, events.CodeStoreIO, "start polosd (it provisions the streams) or check --nats-url", "cannot open the task consumer")
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(e.opts.Concurrency), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return perr.Wrap(err, events.CodeStoreIO, "", "cannot pull tasks")
	}
	go func() { <-ctx.Done(); iter.Drain() }()
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
		e.log.Error("dropping malformed task", "subject", msg.Subject(), "payload", string(msg.Data()))
		_ = msg.Term()
		return
	}
	stop := heartbeat(msg)
	defer stop()
	o, err := e.Advance(ctx, t.RunID)
	if perr.CodeOf(err) == CodeRunBusy {
		_ = msg.NakWithDelay(DefaultBusyDelay)
		return
	}
	if ahead, ok := waitingForSlot(err); ok {
		_ = msg.NakWithDelay(slotRetryDelay(ahead))
		return
	}
	if err != nil || o.Kind == replay.Infrastructure {
		if err == nil {
			err = o.Err
		}
		if perr.CodeOf(err) == replay.CodeWorkflowNotFound || perr.CodeOf(err) == events.CodeRunNotFound {
			e.log.Error("cannot advance run", "run", t.RunID, "err", err)
			_ = msg.Term()
			return
		}
		e.log.Warn("advancing run failed; task will be retried", "run", t.RunID, "err", err)
		_ = msg.NakWithDelay(DefaultRetryDelay)
		return
	}
	_ = msg.Ack()
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
	unlock := e.lock(runID)
	defer unlock()
	l, err := e.acquireLease(ctx, runID)
	if err != nil {
		return replay.Outcome{}, err
	}
	defer l.release()
	hist, err := e.history(ctx, runID)
	if err != nil {
		return replay.Outcome{}, err
	}
	if len(hist) == 0 {
		return replay.Outcome{}, perr.New(events.CodeRunNotFound, "", "run %s has no history", runID)
	}
	name := hist[0].Attr("workflow")
	wf, ok := e.reg.Lookup(name)
	if !ok {
		return replay.Outcome{}, perr.New(replay.CodeWorkflowNotFound, "register the workflow in this executor (polos.yaml or polos.Register)",
			"run %s needs workflow %q, which this executor does not have", runID, name)
	}
	slot, hist, err := e.takeSlot(ctx, runID, hist)
	if err != nil {
		return replay.Outcome{}, err
	}
	if slot != nil {
		defer func() { hist = e.releaseSlot(ctx, runID, slot, hist, false) }()
	}
	j := &journal{store: e.store, runID: runID, last: hist[len(hist)-1].Seq}
	fx := &effects{store: e.store, js: e.js, ns: e.opts.Namespace, queue: hist[0].Attr("queue")}
	r, err := replay.NewRunner(hist, j, fx)
	if err != nil {
		return replay.Outcome{}, err
	}
	r.Namespace = e.opts.Namespace
	// A cancel request published while a step runs cancels the step's context.
	sub, _ := e.nc.Subscribe(e.store.Subject(runID, events.CancelRequest), func(*nats.Msg) { r.RequestCancel() })
	o := r.Run(ctx, wf)
	if sub != nil {
		_ = sub.Unsubscribe()
	}
	hist = r.History()
	if slot != nil {
		hist = e.releaseSlot(ctx, runID, slot, hist, o.Kind == replay.LostOwnership)
	}
	switch o.Kind {
	case replay.LostOwnership, replay.Infrastructure:
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
	_, _, err := st.AppendSignal(ctx, parentID, ev, func(h []events.Event) error {
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
	return protocol.Enqueue(ctx, js, st.Namespace(), queue, parentID, "child:"+childID, "child:"+parentID+":"+childID)
}

var errAlreadyNotified = errors.New("already notified")

// PutIndex writes a run's summary to the derived run index. It does not
// wait for the server's acknowledgement: the index is derived from the
// histories and rewritten on the run's next change, so a lost update costs
// a stale `polos list` line, never correctness, and saves an fsync wait.
func PutIndex(ctx context.Context, js jetstream.JetStream, sum events.Summary) error {
	sum.Result = nil // keep the index small; `polos result` reads the history
	b, _ := json.Marshal(sum)
	return js.Conn().Publish(protocol.KVSubject(protocol.RunsKV, protocol.IndexKey(sum.Namespace, sum.ID)), b)
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

// journal implements replay.Journal for one run.
type journal struct {
	store *events.Store
	runID string
	last  uint64
}

func (j *journal) Append(ctx context.Context, ev *events.Event) (uint64, error) {
	seq, err := j.store.Append(ctx, j.runID, j.last, ev)
	if err == nil {
		j.last = seq
	}
	return seq, err
}

func (j *journal) Refresh(ctx context.Context) ([]events.Event, error) {
	evs, err := j.store.Load(ctx, j.runID, j.last)
	if err == nil && len(evs) > 0 {
		j.last = evs[len(evs)-1].Seq
	}
	return evs, err
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
