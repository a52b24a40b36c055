package client

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/replay"
)

// DefaultControlTimeout bounds a control request when ctx has no deadline.
// The service finishes what it accepted even when the caller gives up
// (its writes run on the service's own context), so a timeout here never
// strands half a change.
const DefaultControlTimeout = 30 * time.Second

// Control sends a control request op (protocol.Ctl*) with req and decodes
// the result into result (nil: ignore it). The service answers errors
// with their codes, so callers branch on perr codes as with a direct
// client.
func (c *Client) Control(ctx context.Context, op string, req, result any) error {
	if c.operator == "" {
		return perr.New(CodeNoControl, "create the client with client.AsOperator(name)", "control request %s from a client that is not an operator", op)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return perr.Wrap(err, CodeBadInput, "", "cannot encode the %s request", op)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultControlTimeout)
		defer cancel()
	}
	subject := protocol.ControlSubject(c.ns, c.operator, op)
	msg, err := c.nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return perr.Wrap(err, CodeNoControl, "start polosd (role all or server) for namespace "+c.ns+", or check --namespace",
				"no Polos control service answered on %s", subject)
		}
		if ctx.Err() != nil {
			return perr.Wrap(err, CodeTimeout, "check `polos status` before trying again: the service finishes what it accepted", "the %s request got no answer in time", op)
		}
		return perr.Wrap(err, CodeUnreachable, "check the connection to the Polos server", "control request %s failed", op)
	}
	var reply protocol.ControlReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return perr.Wrap(err, CodeUnreachable, "check that the server runs a polosd of the same version", "malformed reply to %s", op)
	}
	if reply.Error != nil {
		return reply.Error.Err(protocol.CodeInternal)
	}
	if result != nil && len(reply.Result) > 0 {
		if err := json.Unmarshal(reply.Result, result); err != nil {
			return perr.Wrap(err, CodeUnreachable, "check that the server runs a polosd of the same version", "malformed result of %s", op)
		}
	}
	return nil
}

// StartRequest puts start options on the wire.
func StartRequest(workflow string, input json.RawMessage, o StartOptions) protocol.StartRequest {
	r := protocol.StartRequest{Workflow: workflow, Input: input, ID: o.ID, Queue: o.Queue, Session: o.Session,
		RunTimeoutMs: o.RunTimeout.Milliseconds(), ConcurrencyLimit: o.ConcurrencyLimit, ConcurrencyKey: o.ConcurrencyKey}
	if o.Retry != nil {
		r.RetryMaxAttempts = o.Retry.MaxAttempts
		r.RetryInitialMs = o.Retry.InitialInterval.Milliseconds()
		r.RetryMaxMs = o.Retry.MaxInterval.Milliseconds()
	}
	return r
}

// StartOptionsOf reads start options off the wire (the control service).
func StartOptionsOf(r protocol.StartRequest) StartOptions {
	o := StartOptions{ID: r.ID, Queue: r.Queue, Session: r.Session, RunTimeout: time.Duration(r.RunTimeoutMs) * time.Millisecond,
		ConcurrencyLimit: r.ConcurrencyLimit, ConcurrencyKey: r.ConcurrencyKey}
	if r.RetryMaxAttempts > 0 {
		o.Retry = &replay.WorkflowRetry{MaxAttempts: r.RetryMaxAttempts,
			InitialInterval: time.Duration(r.RetryInitialMs) * time.Millisecond, MaxInterval: time.Duration(r.RetryMaxMs) * time.Millisecond}
	}
	return o
}

func (c *Client) startRemote(ctx context.Context, workflow string, input any, o StartOptions) (string, bool, error) {
	data, err := json.Marshal(input)
	if err != nil {
		return "", false, perr.Wrap(err, CodeBadInput, "pass JSON-serialisable input", "cannot encode input")
	}
	var r protocol.StartReply
	err = c.Control(ctx, protocol.CtlStart, StartRequest(workflow, data, o), &r)
	return r.ID, r.Created, err
}

func (c *Client) resumeRemote(ctx context.Context, id, stepKey string, d Decision) (events.Summary, error) {
	var s events.Summary
	err := c.Control(ctx, protocol.CtlResume, protocol.ResumeRequest{RunID: id, StepKey: stepKey, Data: d.Data}, &s)
	return s, err
}

func (c *Client) listRemote(ctx context.Context, f ListFilter) (index.Listing, error) {
	var r protocol.ListReply
	var l index.Listing
	if err := c.Control(ctx, protocol.CtlList, protocol.ListRequest{Status: f.Status, Agent: f.Agent, Limit: f.Limit}, &r); err != nil {
		return l, err
	}
	if len(r.Runs) > 0 {
		if err := json.Unmarshal(r.Runs, &l.Runs); err != nil {
			return l, perr.Wrap(err, CodeUnreachable, "", "malformed run list")
		}
	}
	if len(r.Unreadable) > 0 {
		if err := json.Unmarshal(r.Unreadable, &l.Unreadable); err != nil {
			return l, perr.Wrap(err, CodeUnreachable, "", "malformed run list")
		}
	}
	return l, nil
}

// WhoAmI asks the control service which identity it takes this client for.
func (c *Client) WhoAmI(ctx context.Context) (protocol.WhoAmIReply, error) {
	var r protocol.WhoAmIReply
	err := c.Control(ctx, protocol.CtlWhoAmI, struct{}{}, &r)
	return r, err
}
