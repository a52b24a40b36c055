// Package client starts, inspects, resumes, cancels and follows Polos runs
// over NATS. It needs only a NATS connection: no executor state.
package client

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/ratelimit"
	"github.com/polos-run/polos/replay"
)

// Error codes.
const (
	CodeUnreachable    perr.Code = "SERVER_UNREACHABLE"
	CodeStepNotWaiting perr.Code = "STEP_NOT_WAITING"
	CodeAlreadyDecided perr.Code = "ALREADY_DECIDED"
	CodeRunFinished    perr.Code = "RUN_FINISHED"
	CodeTimeout        perr.Code = "TIMEOUT"
	CodeBadInput       perr.Code = "BAD_INPUT"    // malformed input, resume data or event payload
	CodeUnauthorized   perr.Code = "UNAUTHORIZED" // the server refused the credentials (or there were none)
	CodeNoControl      perr.Code = "NO_CONTROL"   // no polosd control service answered
)

// DefaultConnectTimeout bounds how long Connect waits for a server.
const DefaultConnectTimeout = 3 * time.Second

// Client talks to Polos through NATS.
type Client struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	store *events.Store
	ns    string
	owned bool
	// operator is set when the client changes runs through polosd's
	// control service as this identity (see AsOperator).
	operator string

	metaMu    sync.Mutex
	metas     map[string]cachedMeta
	metaCalls map[string]*metaCall // lookups in flight, shared by concurrent starts
}

// Option configures a Client.
type Option func(*Client)

// AsOperator makes the client change runs (start, resume, cancel, publish,
// list, grants, budgets) through polosd's control service, as operator
// identity name, and read histories with direct gets only: what a
// connection with operator credentials may do (protocol.RoleOperator).
// Without it the client writes run subjects itself, which only polosd and
// executors may.
func AsOperator(name string) Option {
	return func(c *Client) {
		c.operator = name
		c.store.DirectReadsOnly()
	}
}

// StoreDiagnosis lets the client name the store's fault when a write gets
// no usable answer: fn returns nil while the store is healthy, or a coded
// store error (polosd passes its embedded server's StoreFault). With it a
// start, resume or cancel on a full disk fails at once with STORE_FULL
// instead of waiting for its timeout.
func StoreDiagnosis(fn func() error) Option {
	return func(c *Client) {
		p := c.store.Retry()
		p.Diagnose = fn
		c.store.SetRetry(p)
	}
}

// ReadOnly makes the client read with direct gets only (the observer role).
func ReadOnly() Option { return func(c *Client) { c.store.DirectReadsOnly() } }

// Connect dials a NATS server (comma-separated URLs for a cluster) with
// natsOpts (credentials), then applies opts.
func Connect(url, ns string, natsOpts []nats.Option, opts ...Option) (*Client, error) {
	natsOpts = append([]nats.Option{nats.Name("polos-client"), nats.Timeout(DefaultConnectTimeout)}, natsOpts...)
	nc, err := nats.Connect(url, natsOpts...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			return nil, perr.Wrap(err, CodeUnauthorized,
				"run the CLI as the user who started polosd (it finds <data-dir>/creds itself; --data-dir or POLOS_DATA_DIR if not ~/.polos), or pass --creds FILE",
				"the Polos NATS server at %s refused these credentials", url)
		}
		return nil, perr.Wrap(err, CodeUnreachable,
			"start a server with `polosd` (or `make demo`), or point --server / POLOS_NATS_URL at a running one",
			"cannot reach the Polos NATS server at %s", url)
	}
	c, err := New(nc, ns, opts...)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.owned = true
	return c, nil
}

// New wraps an existing connection.
func New(nc *nats.Conn, ns string, opts ...Option) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, perr.Wrap(err, CodeUnreachable, "", "JetStream unavailable")
	}
	st, err := events.NewStore(nc, js, ns, "client-"+nats.NewInbox()[7:15])
	if err != nil {
		return nil, err
	}
	// A person waits for what a client writes: faults that need an
	// operator (a full disk) come back at once, elections are waited out.
	st.SetRetry(protocol.InteractiveStoreRetry())
	c := &Client{nc: nc, js: js, store: st, ns: st.Namespace(), metas: map[string]cachedMeta{}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Operator is the identity the client acts as through the control service
// ("" for a client that writes directly).
func (c *Client) Operator() string { return c.operator }

// Close closes the connection if Connect opened it.
func (c *Client) Close() {
	if c.owned {
		c.nc.Close()
	}
}

// Conn exposes the NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Store exposes the event store.
func (c *Client) Store() *events.Store { return c.store }

// Namespace is the client's namespace.
func (c *Client) Namespace() string { return c.ns }

// StartOptions configure a new run.
type StartOptions struct {
	// Retry, when set, retries the whole run from the top after a
	// retryable failure (a backoff between attempts; every attempt stays in
	// the history).
	Retry *replay.WorkflowRetry
	// RunTimeout bounds the run's running time (time waiting for a person,
	// a timer or an event does not count); 0 = no limit.
	RunTimeout time.Duration
	ID         string // caller-chosen run ID; starting the same ID twice returns the existing run
	Queue      string // default: the workflow name
	Session    string // conversation/session ID carried to the run
	// ConcurrencyLimit > 0 caps how many runs of Queue (per ConcurrencyKey
	// value) an executor advances at once, across every executor; runs
	// beyond it wait their turn in order, holding no executor slot.
	ConcurrencyLimit int
	// ConcurrencyKey applies the limit per value (e.g. a customer ID).
	ConcurrencyKey string
}

// Start creates a run of workflow with input and queues it. It returns the
// run ID and whether this call created it (false: the ID already existed,
// nothing was changed).
func (c *Client) Start(ctx context.Context, workflow string, input any, o StartOptions) (string, bool, error) {
	if c.operator != "" {
		return c.startRemote(ctx, workflow, input, o)
	}
	if err := events.ValidateID("workflow name", workflow); err != nil {
		return "", false, err
	}
	id := o.ID
	if id == "" {
		id = NewRunID()
	}
	if err := events.ValidateID("run ID", id); err != nil {
		return "", false, err
	}
	data, err := json.Marshal(input)
	if err != nil {
		return "", false, perr.Wrap(err, CodeBadInput, "pass JSON-serialisable input", "cannot encode input")
	}
	meta, known, err := c.lookupWorkflow(ctx, workflow)
	if err != nil {
		return "", false, err
	}
	if meta == nil && len(known) > 0 {
		return "", false, perr.New(replay.CodeWorkflowNotFound, "pick one of: "+strings.Join(known, ", "),
			"no executor serves an agent or workflow named %q", workflow)
	}
	queue := o.Queue
	if queue == "" && meta != nil {
		queue = meta.Queue
	}
	if queue == "" {
		queue = workflow
	}
	if o.ConcurrencyLimit == 0 && meta != nil {
		o.ConcurrencyLimit = meta.ConcurrencyLimit
	}
	if err := events.ValidateID("queue", queue); err != nil {
		return "", false, err
	}
	ev := &events.Event{Type: events.RunStarted, Data: data, Attrs: map[string]string{"workflow": workflow, "queue": queue}}
	if o.Session != "" {
		ev.SetAttr("session", o.Session)
	}
	if o.Retry != nil && o.Retry.MaxAttempts > 1 {
		for k, v := range o.Retry.Attrs() {
			ev.SetAttr(k, v)
		}
	}
	if o.RunTimeout > 0 {
		ev.SetAttr(replay.AttrRunTimeoutMs, strconv.FormatInt(o.RunTimeout.Milliseconds(), 10))
	}
	if o.ConcurrencyLimit < 0 || len(o.ConcurrencyKey) > ratelimit.MaxConcurrencyKey {
		return "", false, perr.New(ratelimit.CodeBadLimit, "pass a concurrency limit >= 0 (0: unlimited) and a key of at most 256 bytes",
			"concurrency limit %d with a %d-byte key", o.ConcurrencyLimit, len(o.ConcurrencyKey))
	}
	if o.ConcurrencyLimit > 0 {
		ev.SetAttr(executor.AttrConcurrencyLimit, strconv.Itoa(o.ConcurrencyLimit))
		if o.ConcurrencyKey != "" {
			ev.SetAttr(executor.AttrConcurrencyKey, o.ConcurrencyKey)
		}
	}
	created := true
	if _, err := c.store.Append(ctx, id, events.Tip{}, ev); err != nil {
		if perr.CodeOf(err) != events.CodeRunExists {
			return "", false, err
		}
		created = false
	}
	// Queued even when the run existed: a creator that died between the
	// append and the queueing leaves a run that this call starts. The
	// message ID makes it a no-op otherwise.
	if err := protocol.EnqueueWith(ctx, c.js, c.store.Retry(), c.ns, queue, id, "start", "start:"+id); err != nil {
		return id, created, err
	}
	if created {
		sum := events.Summarize([]events.Event{*ev})
		sum.Namespace = c.ns
		_ = executor.PutIndex(ctx, c.js, sum)
	}
	return id, created, nil
}

// DefaultWorkflowCacheTTL is how long a client trusts a workflow
// advertisement it has read (the queue and limit of a workflow change only
// when executors restart with another configuration).
const DefaultWorkflowCacheTTL = 10 * time.Second

// lookupWorkflow is protocol.LookupWorkflow with a short cache of the
// workflows found, so starting many runs costs no extra round trip each.
// Concurrent starts of one workflow share one lookup (a burst of starts
// after the cache expired costs one read, not one each). Unknown names are
// always checked again.
func (c *Client) lookupWorkflow(ctx context.Context, name string) (*protocol.WorkflowMeta, []string, error) {
	c.metaMu.Lock()
	if m, ok := c.metas[name]; ok && time.Since(m.at) < DefaultWorkflowCacheTTL {
		c.metaMu.Unlock()
		return m.meta, nil, nil
	}
	if call, ok := c.metaCalls[name]; ok {
		c.metaMu.Unlock()
		select {
		case <-call.done:
			return call.meta, call.known, call.err
		case <-ctx.Done():
			return nil, nil, perr.Wrap(ctx.Err(), CodeUnreachable, "", "looking up workflow %s cancelled", name)
		}
	}
	call := &metaCall{done: make(chan struct{})}
	if c.metaCalls == nil {
		c.metaCalls = map[string]*metaCall{}
	}
	c.metaCalls[name] = call
	c.metaMu.Unlock()
	call.meta, call.known, call.err = protocol.LookupWorkflow(ctx, c.js, c.ns, name)
	c.metaMu.Lock()
	if call.err == nil && call.meta != nil {
		c.metas[name] = cachedMeta{meta: call.meta, at: time.Now()}
	}
	delete(c.metaCalls, name)
	c.metaMu.Unlock()
	close(call.done)
	return call.meta, call.known, call.err
}

// metaCall is one workflow lookup in flight.
type metaCall struct {
	done  chan struct{}
	meta  *protocol.WorkflowMeta
	known []string
	err   error
}

type cachedMeta struct {
	meta *protocol.WorkflowMeta
	at   time.Time
}

// NewRunID returns a fresh run ID: "run_" and 26 lowercase base32
// characters encoding a 48-bit millisecond timestamp (so IDs sort by
// creation time) and 80 random bits from crypto/rand (no collision in
// practice, across processes and machines).
//
// It used to lowercase a NUID, which is base62: IDs differing only in
// letter case collided, and a start with a colliding ID silently returned
// the existing run (found by the 500-run parking test).
func NewRunID() string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 0; i < 6; i++ {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	if _, err := rand.Read(b[6:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // the OS has no entropy source: nothing sane to do
	}
	return "run_" + runIDEncoding.EncodeToString(b[:])
}

// runIDEncoding is Crockford's base32 alphabet, lowercase: order-preserving
// and free of look-alike letters.
var runIDEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// History returns the run's events after afterSeq.
func (c *Client) History(ctx context.Context, id string, afterSeq uint64) ([]events.Event, error) {
	hist, err := c.store.Load(ctx, id, afterSeq)
	if err != nil {
		return nil, err
	}
	if len(hist) == 0 && afterSeq == 0 {
		return nil, notFound(id)
	}
	return hist, nil
}

func notFound(id string) error {
	return perr.New(events.CodeRunNotFound, "list runs with `polos list`", "run %s does not exist", id)
}

// Status derives the run's summary from its history. A run whose history
// did not end is compared with its run index entry: when the index
// recorded more than the history holds (a final status, a later sequence,
// another digest at its sequence: events.CheckIndex), the history lost
// messages, and the run is reported damaged rather than running (a
// completed run never silently reverts). The index is derived: when it
// cannot be read, the summary is the history's alone.
func (c *Client) Status(ctx context.Context, id string) (events.Summary, error) {
	hist, err := c.History(ctx, id, 0)
	if err != nil {
		return events.Summary{}, err
	}
	s := events.Summarize(hist)
	s.Namespace = c.ns
	if events.IsFinal(s.Status) {
		return s, nil
	}
	idx, found, err := index.Get(ctx, c.store.Reader(), c.ns, id)
	if err != nil || !found {
		return s, nil
	}
	why := events.IndexMismatch(idx, hist)
	if why != "" {
		// The entry was read after the history: the run may have moved on
		// in between. Read the history again, now after the entry.
		if hist, err = c.History(ctx, id, 0); err != nil {
			return events.Summary{}, err
		}
		s = events.Summarize(hist)
		s.Namespace = c.ns
		why = events.IndexMismatch(idx, hist)
	}
	if why != "" {
		s.AddDamage(indexDamage(id, idx, why))
	}
	return s, nil
}

// Result waits until the run ends (or ctx is done) and returns its summary.
//
// It waits on an ordered consumer of the run's terminal subjects starting
// after the last event it has seen, not on a core NATS subscription: a core
// subscriber can miss an event the server routed just before the
// subscription existed but stored just after the history was read.
func (c *Client) Result(ctx context.Context, id string) (events.Summary, error) {
	for {
		s, err := c.Status(ctx, id)
		if err != nil {
			return s, err
		}
		switch s.Status {
		case events.StatusCompleted, events.StatusFailed, events.StatusCancelled, events.StatusDamaged:
			return s, nil
		}
		if err := c.waitTerminal(ctx, id, s.LastSeq); err != nil {
			if ctx.Err() != nil {
				return s, perr.New(CodeTimeout, "wait longer (--timeout) or check `polos status "+id+"`", "run %s is still %s", id, s.Status)
			}
			return s, err
		}
	}
}

// waitTerminal returns when a terminal event of run id with a sequence
// above after is stored (read with direct gets: any reader may wait).
func (c *Client) waitTerminal(ctx context.Context, id string, after uint64) error {
	var terminal []string
	for _, t := range []events.Type{events.RunCompleted, events.RunFailed, events.RunCancelled} {
		terminal = append(terminal, c.store.Subject(id, t))
	}
	f, err := protocol.NewFollower(c.store.Reader(), c.store.StreamOf(id), c.store.RunFilter(id), after, terminal...)
	if err != nil {
		return perr.Wrap(err, CodeUnreachable, "", "cannot wait for run %s", id)
	}
	defer f.Stop()
	for {
		m, err := f.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return perr.Wrap(err, CodeUnreachable, "", "cannot wait for run %s", id)
		}
		evs, ok := c.decodeMsg(m)
		if ok && evs[len(evs)-1].Type.IsTerminal() {
			return nil
		}
	}
}

// Decision is a resume of a waiting step.
type Decision struct {
	Data      json.RawMessage // resume data (validated against the step's form by callers that have one)
	DecidedBy string          // who decided (recorded)
	Validate  func(form json.RawMessage, data json.RawMessage) error
}

// Resume decides waiting step stepKey of run id. Exactly one of several
// concurrent decisions on the same step wins; the others get
// CodeAlreadyDecided. A step that is not waiting gives CodeStepNotWaiting.
func (c *Client) Resume(ctx context.Context, id, stepKey string, d Decision) (events.Summary, error) {
	if c.operator != "" {
		return c.resumeRemote(ctx, id, stepKey, d)
	}
	if len(d.Data) == 0 {
		d.Data = json.RawMessage("{}")
	}
	if !json.Valid(d.Data) {
		return events.Summary{}, perr.New(CodeBadInput, "pass valid JSON with --data", "resume data is not valid JSON")
	}
	ev := &events.Event{Type: events.Resumed, Key: stepKey, Data: d.Data, Attrs: map[string]string{"decided_by": d.DecidedBy, "decided_at": time.Now().UTC().Format(time.RFC3339Nano)}}
	var queue string
	seq, hist, err := c.store.AppendSignal(ctx, id, ev, func(h []events.Event) error {
		queue = h[0].Attr("queue")
		s := events.Summarize(h)
		switch s.Status {
		case events.StatusCompleted, events.StatusFailed, events.StatusCancelled:
			return perr.New(CodeRunFinished, "nothing to decide", "run %s is %s", id, s.Status)
		case events.StatusDamaged: // nothing is decided on a history that cannot be replayed
			return perr.New(events.CodeRunDamaged, "see `polos status "+id+"`: restore the stream, or cancel the run", "run %s is damaged; no step can be decided", id)
		}
		for _, e := range h {
			if e.Type == events.Resumed && e.Key == stepKey {
				by := e.Attr("decided_by")
				if by == "" {
					by = "someone"
				}
				return perr.New(CodeAlreadyDecided, "nothing to do: the first decision stands",
					"step %q of run %s was already decided by %s at %s", stepKey, id, by, e.At().Format(time.RFC3339))
			}
		}
		for _, w := range s.Waiting {
			if w.StepKey == stepKey && (w.Kind == events.WaitApproval || w.Kind == events.WaitOperator) {
				if d.Validate != nil {
					return d.Validate(w.Form, d.Data)
				}
				return nil
			}
		}
		return perr.New(CodeStepNotWaiting, "see the waiting steps with `polos status "+id+"`",
			"run %s has no step %q waiting for a decision (waiting: %s)", id, stepKey, waitingKeys(s))
	})
	if err != nil {
		if perr.CodeOf(err) == events.CodeRunNotFound {
			return events.Summary{}, notFound(id)
		}
		return events.Summary{}, err
	}
	// The waker queues the run too (executor.Waker): a decision whose
	// caller gives up here still moves its run.
	if err := protocol.EnqueueWith(ctx, c.js, c.store.Retry(), c.ns, queue, id, "resume:"+stepKey, protocol.WakeDedupe(id, seq)); err != nil {
		return events.Summary{}, err
	}
	return events.Summarize(hist), nil
}

func waitingKeys(s events.Summary) string {
	if len(s.Waiting) == 0 {
		return "none"
	}
	var k []string
	for _, w := range s.Waiting {
		k = append(k, w.StepKey+" ("+w.Kind+")")
	}
	return strings.Join(k, ", ")
}

// Cancel requests cancellation. A waiting run is cancelled as soon as an
// executor sees the request; a running step sees it through its context.
func (c *Client) Cancel(ctx context.Context, id string) error {
	if c.operator != "" {
		return c.Control(ctx, protocol.CtlCancel, protocol.RunRequest{RunID: id}, nil)
	}
	var queue string
	seq, _, err := c.store.AppendSignal(ctx, id, &events.Event{Type: events.CancelRequest}, func(h []events.Event) error {
		queue = h[0].Attr("queue")
		s := events.Summarize(h)
		switch s.Status {
		case events.StatusCompleted, events.StatusFailed, events.StatusCancelled:
			return perr.New(CodeRunFinished, "nothing to cancel", "run %s is already %s", id, s.Status)
		}
		return nil
	})
	if err != nil {
		if perr.CodeOf(err) == events.CodeRunNotFound {
			return notFound(id)
		}
		return err
	}
	return protocol.EnqueueWith(ctx, c.js, c.store.Retry(), c.ns, queue, id, "cancel", protocol.WakeDedupe(id, seq))
}

// PublishEvent publishes data on topic and wakes the runs waiting on it.
// Delivery rule: a run receives the first event published on the topic
// after its WaitForEvent was registered; earlier events are not delivered.
func (c *Client) PublishEvent(ctx context.Context, topic string, data any) error {
	if c.operator != "" {
		b, err := json.Marshal(data)
		if err != nil {
			return perr.Wrap(err, CodeBadInput, "pass JSON-serialisable data", "cannot encode event")
		}
		return c.Control(ctx, protocol.CtlPublish, protocol.PublishRequest{Topic: topic, Data: b}, nil)
	}
	b, err := json.Marshal(data)
	if err != nil {
		return perr.Wrap(err, CodeBadInput, "pass JSON-serialisable data", "cannot encode event")
	}
	for _, tok := range strings.Split(topic, ".") {
		if err := events.ValidateID("topic token", tok); err != nil {
			return err
		}
	}
	ack, err := c.js.Publish(ctx, protocol.TopicSubject(c.ns, topic), b)
	if err != nil {
		return perr.Wrap(err, CodeUnreachable, "", "cannot publish event on %s", topic)
	}
	kv, err := c.js.KeyValue(ctx, protocol.WaitersKV)
	if err != nil {
		return perr.Wrap(err, CodeUnreachable, "", "waiters bucket unavailable")
	}
	lister, err := kv.ListKeysFiltered(ctx, protocol.WaiterFilter(c.ns, topic))
	if err != nil {
		return nil
	}
	for k := range lister.Keys() {
		runID := protocol.RunIDFromWaiterKey(k)
		entry, err := kv.Get(ctx, k)
		var q struct{ Queue string }
		if err == nil {
			_ = json.Unmarshal(entry.Value(), &q)
		}
		_ = protocol.EnqueueWith(ctx, c.js, c.store.Retry(), c.ns, q.Queue, runID, "event:"+topic, "event:"+runID+":"+itoa(ack.Sequence))
	}
	return nil
}

func itoa(u uint64) string { b, _ := json.Marshal(u); return string(b) }

// ListFilter selects runs from the index.
type ListFilter struct {
	Status string
	Agent  string
	Limit  int
	// Stuck keeps only running runs that no live executor can serve, each
	// with Summary.Stuck saying why (`polos list --stuck`).
	Stuck bool
}

// List reads the derived run index, newest first (ListRuns also reports
// entries it could not read).
func (c *Client) List(ctx context.Context, f ListFilter) ([]events.Summary, error) {
	l, err := c.ListRuns(ctx, f)
	return l.Runs, err
}

// ErrStop ends Follow without an error.
var ErrStop = errors.New("stop following")
