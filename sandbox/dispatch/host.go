package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// Host defaults.
const (
	// DefaultMaxConcurrent bounds the requests a host serves at once; more
	// wait in the subscription (NATS spreads load over the queue group).
	DefaultMaxConcurrent = 64
	// DefaultHostOpTimeout bounds every operation but exec (bounded by its
	// own timeout) on the host.
	DefaultHostOpTimeout = 5 * time.Minute
	// MaxCachedSandboxes bounds a host's cache of opened sandboxes; past it
	// the cache is emptied (reopening is cheap and always correct).
	MaxCachedSandboxes = 1024
)

// Host serves sandbox providers on their subjects for one namespace.
//
// Trust (ADR 0112): a host trusts no workspace, image or mount from the
// wire. A create Spec is checked against the host's own Policy
// (CodeNotAllowed); the Info it returns is sealed with the host's Key for
// the run that asked (Info.Owner). Every later request must carry that
// Info unchanged and the same run: a forged or altered Info, or one sealed
// by another key, is CodeForged; another run's is CodeNotYours; an Info
// without a seal (recorded before sealing) is CodeUnsealed. A refused
// request never reaches a provider. Share lets the owning run hand a
// sandbox to another run (a child agent) with an Info sealed for that run.
//
// Failure behaviour: a panic in a provider is recovered and answered with
// CodeProvider; a malformed payload is answered with CodeBadRequest; a reply
// larger than the connection's max payload is replaced by a CodeTooLarge
// error. If the host dies mid-request the client gets no reply (its request
// times out with CodeUnavailable) and later requests go to the other hosts of
// the queue group, which reopen the sandbox from the request's Info.
type Host struct {
	nc        *nats.Conn
	ns        string
	key       Key
	policy    Policy
	providers map[string]sandbox.Provider
	subs      []*nats.Subscription
	sem       chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	served    atomic.Int64

	mu    sync.Mutex
	cache map[string]sandbox.Sandbox // provider + "/" + sandbox ID
}

// HostOptions configure a Host.
type HostOptions struct {
	// Namespace is the namespace served; "" means DefaultNamespace.
	Namespace string
	// Key seals the sandboxes the host creates and checks every later
	// request; required. Every host of a namespace must hold the same key
	// (LoadOrCreateKey on a shared data directory, or the same key file).
	Key Key
	// Policy is what a create may ask for; see Policy for the zero value.
	Policy Policy
}

// NewHost subscribes to the subjects of every provider in o.Namespace and
// serves them until Close.
func NewHost(nc *nats.Conn, o HostOptions, providers ...sandbox.Provider) (*Host, error) {
	ns := o.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	if err := checkToken("namespace", ns); err != nil {
		return nil, err
	}
	if !o.Key.valid() {
		return nil, perr.New(CodeHostKey, "pass the host key: dispatch.LoadOrCreateKey(<data dir>/"+KeyFile+")",
			"a sandbox host needs a key to seal its sandboxes")
	}
	if len(providers) == 0 {
		return nil, perr.New(sandbox.CodeBadRequest, "pass at least one provider (local, docker, e2b)", "a sandbox host needs a provider to serve")
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Host{nc: nc, ns: ns, key: o.Key, policy: o.Policy, providers: map[string]sandbox.Provider{}, sem: make(chan struct{}, DefaultMaxConcurrent),
		ctx: ctx, cancel: cancel, cache: map[string]sandbox.Sandbox{}}
	for _, p := range providers {
		name := p.Name()
		if err := checkToken("provider name", name); err != nil {
			h.Close()
			return nil, err
		}
		h.providers[name] = p
		sub, err := nc.QueueSubscribe(Subject(ns, name, "*"), QueueGroup(name), h.dispatch)
		if err != nil {
			h.Close()
			return nil, perr.Wrap(err, sandbox.CodeProvider, "check the NATS connection", "cannot subscribe to %s", Subject(ns, name, "*"))
		}
		h.subs = append(h.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		h.Close()
		return nil, perr.Wrap(err, sandbox.CodeProvider, "check the NATS connection", "cannot confirm the sandbox host's subscriptions")
	}
	return h, nil
}

// Served reports how many requests this host has answered.
func (h *Host) Served() int64 { return h.served.Load() }

// Close stops taking requests, cancels those in progress (a running exec is
// killed and answered as timed out) and waits for their replies.
func (h *Host) Close() error {
	for _, s := range h.subs {
		_ = s.Unsubscribe()
	}
	h.cancel()
	h.wg.Wait()
	return nil
}

// dispatch runs in the subscription's goroutine: it takes a slot and serves
// the request in its own goroutine, so a long exec does not block others.
func (h *Host) dispatch(msg *nats.Msg) {
	select {
	case h.sem <- struct{}{}:
	case <-h.ctx.Done():
		return
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer func() { <-h.sem }()
		h.reply(msg, h.serve(msg))
	}()
}

// reply answers msg with result (or the error it holds).
func (h *Host) reply(msg *nats.Msg, r Reply) {
	if msg.Reply == "" {
		return
	}
	data, err := json.Marshal(r)
	if err != nil {
		data, _ = json.Marshal(Reply{Error: toWire(perr.Wrap(err, sandbox.CodeProvider, "", "cannot encode the reply"))})
	}
	if max := h.nc.MaxPayload(); max > 0 && int64(len(data)) > max {
		data, _ = json.Marshal(Reply{Error: toWire(perr.New(sandbox.CodeTooLarge,
			"ask for less: read with offset/limit, narrow glob or grep, or raise the NATS max_payload",
			"the reply to %s is %d bytes, over the NATS max payload of %d bytes", msg.Subject, len(data), max))})
	}
	if err := msg.Respond(data); err == nil {
		h.served.Add(1)
	}
}

// serve decodes and runs one request. It never panics.
func (h *Host) serve(msg *nats.Msg) (r Reply) {
	op := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
	defer func() {
		if p := recover(); p != nil {
			r = Reply{Error: toWire(perr.New(sandbox.CodeProvider, "report this bug with the request that caused it",
				"the sandbox host panicked serving %s: %v", msg.Subject, p))}
		}
	}()
	result, err := h.run(msg.Subject, op, msg.Data)
	if err != nil {
		return Reply{Error: toWire(err)}
	}
	data, err := json.Marshal(result)
	if err != nil {
		return Reply{Error: toWire(perr.Wrap(err, sandbox.CodeProvider, "", "cannot encode the %s result", op))}
	}
	return Reply{Result: data}
}

// provider returns the provider a subject names.
func (h *Host) provider(subject string) (sandbox.Provider, error) {
	// polos.<ns>.sandbox.<provider>.<op>
	parts := strings.Split(subject, ".")
	if len(parts) != 5 {
		return nil, perr.New(sandbox.CodeBadRequest, "use polos.<ns>.sandbox.<provider>.<op>", "subject %q has the wrong shape", subject)
	}
	p, ok := h.providers[parts[3]]
	if !ok {
		return nil, perr.New(sandbox.CodeBadRequest, "", "this host does not serve provider %q", parts[3])
	}
	return p, nil
}

func (h *Host) run(subject, op string, data []byte) (any, error) {
	p, err := h.provider(subject)
	if err != nil {
		return nil, err
	}
	req, err := DecodeRequest(op, data)
	if err != nil {
		return nil, err
	}
	if req.Info != nil && req.Info.Provider != p.Name() {
		return nil, perr.New(sandbox.CodeBadRequest, "send the request to the subject of the sandbox's provider",
			"sandbox %s belongs to provider %q, but the request came on %s", req.Info.ID, req.Info.Provider, subject)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	if op != sandbox.OpExec {
		ctx, cancel = context.WithTimeout(ctx, DefaultHostOpTimeout)
		defer cancel()
	}
	if op == sandbox.OpCreate {
		return h.create(ctx, p, req)
	}

	// Everything else acts on an existing sandbox: its Info must be one
	// this host sealed, for the run that asks.
	if err := h.key.verify(h.ns, *req.Info, req.Run); err != nil {
		return nil, err
	}
	info := bare(*req.Info)
	switch op {
	case OpShare:
		if err := checkRun("share target", req.To); err != nil {
			return nil, err
		}
		return h.key.seal(h.ns, info, req.To, req.Run), nil
	case sandbox.OpDestroy:
		if req.Info.SharedBy != "" {
			return nil, perr.New(sandbox.CodeNotYours, "let the run that created the sandbox destroy it",
				"sandbox %s was shared with run %s by run %s; a shared sandbox cannot be destroyed by the run it was shared with", info.ID, req.Run, req.Info.SharedBy)
		}
		h.forget(p, info)
		return struct{}{}, p.Destroy(ctx, info)
	}
	spec, err := h.policy.openSpec(p.Name(), req.Spec)
	if err != nil {
		return nil, err
	}
	if op == OpOpen {
		// Always ask the provider: open is how a client learns the sandbox is lost.
		sb, err := p.Open(ctx, info, spec)
		if err != nil {
			h.forget(p, info)
			return nil, err
		}
		h.put(p, sb)
		return h.key.seal(h.ns, bare(sb.Info()), req.Info.Owner, req.Info.SharedBy), nil
	}
	sb, err := h.open(ctx, p, info, spec)
	if err != nil {
		return nil, err
	}
	result, err := runTool(ctx, sb, op, req.Req)
	if perr.Has(err, sandbox.CodeSandboxLost) {
		h.forget(p, info)
	}
	return result, err
}

// create checks the spec against the policy, creates the sandbox for the
// run that asks and returns its sealed Info.
func (h *Host) create(ctx context.Context, p sandbox.Provider, req Request) (any, error) {
	if err := checkRun("run", req.Run); err != nil {
		return nil, err
	}
	spec := req.Spec
	switch spec.Owner {
	case "":
		spec.Owner = req.Run
	case req.Run:
	default:
		return nil, perr.New(sandbox.CodeNotYours, "leave Spec.Owner empty or set it to the run making the request",
			"run %s asked for a sandbox owned by %q: a run may only create sandboxes for itself", req.Run, spec.Owner)
	}
	spec, err := h.policy.checkCreate(p.Name(), spec)
	if err != nil {
		return nil, err
	}
	sb, err := p.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	info := bare(sb.Info())
	if p.Name() == sandbox.ProviderLocal {
		// The local workspace is a host path the provider resolved itself:
		// check it again, in case a symlink changed in between.
		if _, err := h.policy.checkWorkspace(info.Workspace); err != nil {
			_ = p.Destroy(context.WithoutCancel(ctx), info)
			return nil, err
		}
	}
	h.put(p, sb)
	return h.key.seal(h.ns, info, spec.Owner, ""), nil
}

// bare is info without what the host adds (owner, seal): what a provider
// made and reads.
func bare(info sandbox.Info) sandbox.Info {
	return sandbox.Info{Provider: info.Provider, ID: info.ID, Image: info.Image, Workspace: info.Workspace, Confinement: info.Confinement}
}

// toolOps serve the tool operations, one entry per method of
// sandbox.Sandbox: each decodes the "req" member into the method's request
// type and calls it.
var toolOps = map[string]toolOp{
	sandbox.OpExec:  serveTool(sandbox.Sandbox.Exec),
	sandbox.OpRead:  serveTool(sandbox.Sandbox.Read),
	sandbox.OpWrite: serveTool(sandbox.Sandbox.Write),
	sandbox.OpEdit:  serveTool(sandbox.Sandbox.Edit),
	sandbox.OpGlob:  serveTool(sandbox.Sandbox.Glob),
	sandbox.OpGrep:  serveTool(sandbox.Sandbox.Grep),
}

type toolOp func(ctx context.Context, sb sandbox.Sandbox, op string, raw json.RawMessage) (any, error)

// runTool decodes the tool request of op and runs it on sb; an op that is
// not a tool is CodeBadRequest.
func runTool(ctx context.Context, sb sandbox.Sandbox, op string, raw json.RawMessage) (any, error) {
	serve, ok := toolOps[op]
	if !ok {
		return nil, perr.New(sandbox.CodeBadRequest, "use one of "+strings.Join(Ops, ", "), "unknown sandbox operation %q", op)
	}
	return serve(ctx, sb, op, raw)
}

// serveTool adapts a sandbox.Sandbox method expression to a toolOp.
func serveTool[Req, Res any](method func(sandbox.Sandbox, context.Context, Req) (Res, error)) toolOp {
	return func(ctx context.Context, sb sandbox.Sandbox, op string, raw json.RawMessage) (any, error) {
		var req Req
		if err := decodeToolRequest(op, raw, &req); err != nil {
			return nil, err
		}
		res, err := method(sb, ctx, req)
		if err != nil {
			return nil, err
		}
		return res, nil
	}
}

func cacheKey(provider, id string) string { return provider + "/" + id }

func (h *Host) put(p sandbox.Provider, sb sandbox.Sandbox) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.cache) >= MaxCachedSandboxes {
		clear(h.cache)
	}
	h.cache[cacheKey(p.Name(), sb.Info().ID)] = sb
}

func (h *Host) forget(p sandbox.Provider, info sandbox.Info) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.cache, cacheKey(p.Name(), info.ID))
}

// open returns the cached sandbox of info (verified), or opens it.
func (h *Host) open(ctx context.Context, p sandbox.Provider, info sandbox.Info, spec sandbox.Spec) (sandbox.Sandbox, error) {
	key := cacheKey(p.Name(), info.ID)
	h.mu.Lock()
	sb, ok := h.cache[key]
	h.mu.Unlock()
	if ok {
		return sb, nil
	}
	sb, err := p.Open(ctx, info, spec)
	if err != nil {
		return nil, err
	}
	h.put(p, sb)
	return sb, nil
}

// String names the host for logs.
func (h *Host) String() string {
	names := make([]string, 0, len(h.providers))
	for n := range h.providers {
		names = append(names, n)
	}
	return fmt.Sprintf("sandbox host ns=%s providers=%s", h.ns, strings.Join(names, ","))
}
