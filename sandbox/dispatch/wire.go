// Package dispatch carries sandbox operations over NATS request/reply, so an
// executor reaches sandboxes without Docker, or the workspace, on its own
// machine.
//
// Subjects: polos.<ns>.sandbox.<provider>.<op>, op one of create, open,
// destroy, exec, read, write, edit, glob, grep. Hosts subscribe to
// polos.<ns>.sandbox.<provider>.* in the queue group "polos-sandbox-<provider>",
// so each request reaches one host and more hosts add capacity. Hosts keep no
// sandbox state that matters: any host can serve any request for a sandbox by
// reopening it from the Info carried in the request.
//
// Payloads are JSON. A request is {"run":..., "info":..., "spec":...,
// "req":..., "to":...}: every request carries run, the run it is made for;
// create carries spec; open and destroy carry info (and spec); share carries
// info and to; the tool ops carry info, spec and req, the tool request of
// package sandbox. The info is the sealed Info create returned (ADR 0112):
// hosts refuse any other. A reply is
// {"result":...} or {"error":{"code":..., "message":..., "fix":...}}; the
// client turns an error back into a *perr.Error with the same code.
package dispatch

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/sandbox"
)

// Operations that extend those named in package sandbox.
const (
	// OpOpen reattaches to an existing sandbox (Provider.Open).
	OpOpen = "open"
	// OpShare returns the Info with which another run may use a sandbox
	// (sandbox.Share); it touches no provider.
	OpShare = "share"
)

// DefaultNamespace is the namespace when none is given.
const DefaultNamespace = protocol.DefaultNamespace

// Ops are the operations a host serves, each the last token of its subject.
var Ops = []string{sandbox.OpCreate, OpOpen, OpShare, sandbox.OpDestroy, sandbox.OpExec, sandbox.OpRead,
	sandbox.OpWrite, sandbox.OpEdit, sandbox.OpGlob, sandbox.OpGrep}

// Subject is the subject of op on provider's sandboxes in namespace ns
// (protocol.SandboxSubject).
func Subject(ns, provider, op string) string { return protocol.SandboxSubject(ns, provider, op) }

// QueueGroup is the queue group of the hosts serving provider.
func QueueGroup(provider string) string { return protocol.SandboxQueueGroup(provider) }

// maxRunIDLen bounds a run ID on the wire (the run IDs of package events).
const maxRunIDLen = 128

// checkRun refuses a run ID that is empty, too long or holds characters
// other than A-Z a-z 0-9 _ - (the run IDs of package events); kind names
// it in the error.
func checkRun(kind, id string) error {
	if id == "" {
		return perr.New(sandbox.CodeNotYours, "send the run ID with the request (sandbox.WithRun, or Spec.Owner)",
			"the sandbox request names no %s", kind)
	}
	ok := len(id) <= maxRunIDLen
	for _, r := range id {
		ok = ok && (r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}
	if !ok {
		return perr.New(sandbox.CodeBadRequest, "use a run ID of 1-128 characters from A-Z a-z 0-9 _ -",
			"%s %q is not a valid run ID", kind, id)
	}
	return nil
}

// checkToken refuses names that would change a subject's shape.
func checkToken(kind, s string) error {
	if s == "" || strings.ContainsAny(s, ".*> \t\r\n") {
		return perr.New(sandbox.CodeBadRequest, "use a non-empty name without '.', '*', '>' or spaces",
			"%s %q cannot be a NATS subject token", kind, s)
	}
	return nil
}

// Request is the payload of every sandbox request. Run is the run on whose
// behalf it is made: the sandbox's owner (a create's Spec.Owner, a sealed
// Info's Owner). To is the run a share is for.
type Request struct {
	Run  string          `json:"run,omitempty"`
	Info *sandbox.Info   `json:"info,omitempty"`
	Spec sandbox.Spec    `json:"spec"`
	Req  json.RawMessage `json:"req,omitempty"`
	To   string          `json:"to,omitempty"`
}

// Reply is the payload of every reply: a result or an error.
type Reply struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *WireError      `json:"error,omitempty"`
}

// WireError is a coded error as it travels (shared with control replies).
type WireError = protocol.WireError

func toWire(err error) *WireError { return protocol.ToWire(err, sandbox.CodeProvider) }

// DecodeRequest parses a request payload for op. It never panics; a
// malformed payload is a CodeBadRequest error saying what was expected.
func DecodeRequest(op string, data []byte) (Request, error) {
	var r Request
	if err := json.Unmarshal(data, &r); err != nil {
		return Request{}, perr.Wrap(err, sandbox.CodeBadRequest, "send a JSON object {\"info\":..., \"spec\":..., \"req\":...}",
			"malformed sandbox %s request", op)
	}
	if op != sandbox.OpCreate {
		if r.Info == nil || r.Info.ID == "" {
			return Request{}, perr.New(sandbox.CodeBadRequest, "send the sandbox Info that create returned in \"info\"",
				"sandbox %s request has no sandbox info", op)
		}
	}
	return r, nil
}

// decodeToolRequest parses the "req" member into v.
func decodeToolRequest(op string, raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return perr.New(sandbox.CodeBadRequest, "send the tool request in \"req\"", "sandbox %s request has no \"req\"", op)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return perr.Wrap(err, sandbox.CodeBadRequest, fmt.Sprintf("send the %s request as documented in package sandbox", op),
			"malformed sandbox %s request", op)
	}
	return nil
}
