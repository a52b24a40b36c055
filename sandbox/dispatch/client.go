package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// Client request timeouts.
const (
	// DefaultLifecycleTimeout bounds create, open and destroy (a container
	// or a cloud sandbox may take a while to start).
	DefaultLifecycleTimeout = 2 * time.Minute
	// DefaultFileTimeout bounds read, write and edit.
	DefaultFileTimeout = 30 * time.Second
	// DefaultSearchTimeout bounds glob and grep, which walk a tree.
	DefaultSearchTimeout = 2 * time.Minute
	// DefaultExecMargin is added to an exec's own timeout to get the
	// request timeout, for the round trip and the host's kill and reply.
	DefaultExecMargin = 30 * time.Second
)

// Client is a sandbox.Provider whose sandboxes live behind sandbox hosts:
// every method sends a request on polos.<ns>.sandbox.<provider>.<op>. An
// executor uses it exactly as it would an in-process provider.
//
// Every request carries the run it is made for: the run in ctx
// (sandbox.WithRun), else the Spec's Owner (create, open and the tools);
// Destroy and Share, which take no Spec, need the run in ctx. Hosts serve
// a sandbox only to its owner (ADR 0112).
//
// Failure behaviour: no host subscribed gives CodeUnavailable at once; no
// reply in time (e.g. the host died mid-request) gives CodeUnavailable after
// the request timeout, and the operation may or may not have run; a request
// over the NATS max payload gives CodeTooLarge without being sent; a
// cancelled ctx returns ctx's error.
type Client struct {
	nc       *nats.Conn
	ns       string
	provider string
	timeouts map[string]time.Duration
	margin   time.Duration
}

// ClientOption adjusts a Client.
type ClientOption func(*Client)

// WithTimeout sets the request timeout of op (not exec: see WithExecMargin).
func WithTimeout(op string, d time.Duration) ClientOption {
	return func(c *Client) { c.timeouts[op] = d }
}

// WithExecMargin sets what is added to an exec's own timeout to get its
// request timeout.
func WithExecMargin(d time.Duration) ClientOption { return func(c *Client) { c.margin = d } }

// NewClient returns the client for provider's sandboxes in namespace ns (""
// means DefaultNamespace).
func NewClient(nc *nats.Conn, ns, provider string, opts ...ClientOption) (*Client, error) {
	if ns == "" {
		ns = DefaultNamespace
	}
	if err := checkToken("namespace", ns); err != nil {
		return nil, err
	}
	if err := checkToken("provider name", provider); err != nil {
		return nil, err
	}
	c := &Client{nc: nc, ns: ns, provider: provider, margin: DefaultExecMargin, timeouts: map[string]time.Duration{
		sandbox.OpCreate: DefaultLifecycleTimeout, OpOpen: DefaultLifecycleTimeout, sandbox.OpDestroy: DefaultLifecycleTimeout,
		sandbox.OpRead: DefaultFileTimeout, sandbox.OpWrite: DefaultFileTimeout, sandbox.OpEdit: DefaultFileTimeout,
		sandbox.OpGlob: DefaultSearchTimeout, sandbox.OpGrep: DefaultSearchTimeout, OpShare: DefaultFileTimeout,
	}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

func (c *Client) Name() string { return c.provider }

// runFor is the run a request is made for: the run in ctx, else the spec's
// owner.
func runFor(ctx context.Context, spec sandbox.Spec) string {
	if r := sandbox.RunOf(ctx); r != "" {
		return r
	}
	return spec.Owner
}

// Create asks a host to create a sandbox owned by the request's run (the
// Spec's Owner, filled in from ctx when empty) and returns it with the
// sealed Info.
func (c *Client) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	if spec.Provider == "" {
		spec.Provider = c.provider
	}
	run := runFor(ctx, spec)
	if spec.Owner == "" {
		spec.Owner = run
	}
	var info sandbox.Info
	if err := c.call(ctx, sandbox.OpCreate, Request{Run: run, Spec: spec}, c.timeouts[sandbox.OpCreate], &info); err != nil {
		return nil, err
	}
	return &remote{c: c, info: info, spec: spec, run: run}, nil
}

// Open asks a host to reopen the sandbox, so a lost sandbox is reported
// here (CodeSandboxLost) rather than at its first use.
func (c *Client) Open(ctx context.Context, info sandbox.Info, spec sandbox.Spec) (sandbox.Sandbox, error) {
	run := runFor(ctx, spec)
	var got sandbox.Info
	if err := c.call(ctx, OpOpen, Request{Run: run, Info: &info, Spec: spec}, c.timeouts[OpOpen], &got); err != nil {
		return nil, err
	}
	return &remote{c: c, info: got, spec: spec, run: run}, nil
}

// Destroy asks a host to destroy the sandbox; the run in ctx must be the
// one that created it.
func (c *Client) Destroy(ctx context.Context, info sandbox.Info) error {
	return c.call(ctx, sandbox.OpDestroy, Request{Run: sandbox.RunOf(ctx), Info: &info}, c.timeouts[sandbox.OpDestroy], nil)
}

// Share returns the Info with which run `to` may use the sandbox of info
// (sandbox.Sharer); the run in ctx must own it. The shared Info is sealed
// for `to`, so pass it to that run (e.g. in a child's input); it cannot
// destroy the sandbox.
func (c *Client) Share(ctx context.Context, info sandbox.Info, to string) (sandbox.Info, error) {
	var got sandbox.Info
	err := c.call(ctx, OpShare, Request{Run: sandbox.RunOf(ctx), Info: &info, To: to}, c.timeouts[OpShare], &got)
	return got, err
}

var _ sandbox.Sharer = (*Client)(nil)

// call sends one request and decodes the reply's result into out.
func (c *Client) call(ctx context.Context, op string, req Request, timeout time.Duration, out any) error {
	subject := Subject(c.ns, c.provider, op)
	data, err := json.Marshal(req)
	if err != nil {
		return perr.Wrap(err, sandbox.CodeBadRequest, "", "cannot encode the %s request", op)
	}
	if max := c.nc.MaxPayload(); max > 0 && int64(len(data)) > max {
		return perr.New(sandbox.CodeTooLarge, "send less: write large files in parts or generate them with exec, or raise the NATS max_payload",
			"the %s request is %d bytes, over the NATS max payload of %d bytes", op, len(data), max)
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := c.nc.RequestWithContext(rctx, subject, data)
	switch {
	case err == nil:
	case errors.Is(err, nats.ErrNoResponders):
		return perr.New(sandbox.CodeUnavailable, "start a sandbox host (polosd --role sandbox) for provider "+c.provider,
			"no sandbox host serves %s sandboxes in namespace %s (nobody listens on %s)", c.provider, c.ns, subject)
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return perr.New(sandbox.CodeUnavailable, "check that sandbox hosts (polosd --role sandbox) are running; the operation may or may not have run",
			"no reply from a sandbox host to %s within %v", subject, timeout)
	default:
		return perr.Wrap(err, sandbox.CodeUnavailable, "check the NATS connection", "cannot send %s", subject)
	}
	var rep Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return perr.Wrap(err, sandbox.CodeProvider, "run the same Polos version on executors and sandbox hosts",
			"malformed reply on %s", subject)
	}
	if rep.Error != nil {
		return rep.Error.Err(sandbox.CodeProvider)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(rep.Result, out); err != nil {
		return perr.Wrap(err, sandbox.CodeProvider, "run the same Polos version on executors and sandbox hosts",
			"malformed %s result on %s", op, subject)
	}
	return nil
}

// remote is a Sandbox behind sandbox hosts, used for run.
type remote struct {
	c    *Client
	info sandbox.Info
	spec sandbox.Spec
	run  string
}

func (r *remote) Info() sandbox.Info { return r.info }

func roundTrip[Res any](ctx context.Context, r *remote, op string, toolReq any, timeout time.Duration) (Res, error) {
	var res Res
	raw, err := json.Marshal(toolReq)
	if err != nil {
		return res, perr.Wrap(err, sandbox.CodeBadRequest, "", "cannot encode the %s request", op)
	}
	err = r.c.call(ctx, op, Request{Run: r.run, Info: &r.info, Spec: r.spec, Req: raw}, timeout, &res)
	return res, err
}

// Exec waits for the exec's own timeout (DefaultExecTimeoutSec when 0)
// plus the client's margin.
func (r *remote) Exec(ctx context.Context, req sandbox.ExecRequest) (sandbox.ExecResult, error) {
	sec := req.TimeoutSec
	if sec <= 0 {
		sec = sandbox.DefaultExecTimeoutSec
	}
	return roundTrip[sandbox.ExecResult](ctx, r, sandbox.OpExec, req, time.Duration(sec)*time.Second+r.c.margin)
}

func (r *remote) Read(ctx context.Context, req sandbox.ReadRequest) (sandbox.ReadResult, error) {
	return roundTrip[sandbox.ReadResult](ctx, r, sandbox.OpRead, req, r.c.timeouts[sandbox.OpRead])
}

func (r *remote) Write(ctx context.Context, req sandbox.WriteRequest) (sandbox.WriteResult, error) {
	return roundTrip[sandbox.WriteResult](ctx, r, sandbox.OpWrite, req, r.c.timeouts[sandbox.OpWrite])
}

func (r *remote) Edit(ctx context.Context, req sandbox.EditRequest) (sandbox.EditResult, error) {
	return roundTrip[sandbox.EditResult](ctx, r, sandbox.OpEdit, req, r.c.timeouts[sandbox.OpEdit])
}

func (r *remote) Glob(ctx context.Context, req sandbox.GlobRequest) (sandbox.GlobResult, error) {
	return roundTrip[sandbox.GlobResult](ctx, r, sandbox.OpGlob, req, r.c.timeouts[sandbox.OpGlob])
}

func (r *remote) Grep(ctx context.Context, req sandbox.GrepRequest) (sandbox.GrepResult, error) {
	return roundTrip[sandbox.GrepResult](ctx, r, sandbox.OpGrep, req, r.c.timeouts[sandbox.OpGrep])
}
