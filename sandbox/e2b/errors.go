package e2b

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// Fix lines shared by several errors.
const (
	fixAPIKey    = "set " + EnvAPIKey + " to a valid E2B API key (https://e2b.dev/dashboard?tab=keys)"
	fixCapacity  = "wait for running sandboxes to finish, destroy unused ones, or raise the team's concurrency limit at E2B"
	fixRetry     = "retry later; if it persists check https://status.e2b.dev"
	fixLost      = "the sandbox timed out or was killed; create a new one (raise Spec.TimeoutSec for long runs)"
	fixReportBug = "this is a bug in the E2B provider or an incompatible envd version; report it with this message"
)

// scope says which side answered, because the same status means different
// things: 404 from the control plane is a lost sandbox, from /files a
// missing file.
type scope int

const (
	scopeAPI  scope = iota // control plane (api.<domain>)
	scopeEnvd              // envd, behind the edge proxy
)

// errorBody is the union of E2B's error bodies: the control plane and envd
// HTTP use a numeric code, Connect a string code, the proxy adds sandboxId.
type errorBody struct {
	Code      json.RawMessage `json:"code"`
	Message   string          `json:"message"`
	ErrorCode string          `json:"error_code"`
}

// parseErrorBody extracts the message and, for Connect errors, the string
// code. A body that is not JSON is returned trimmed as the message.
func parseErrorBody(body []byte) (message, connectCode string) {
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		return truncateForError(strings.TrimSpace(string(body))), ""
	}
	var s string
	if json.Unmarshal(eb.Code, &s) == nil {
		connectCode = s
	}
	message = eb.Message
	if eb.ErrorCode != "" {
		message += " (" + eb.ErrorCode + ")"
	}
	return truncateForError(message), connectCode
}

func truncateForError(s string) string {
	const max = 500
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// statusError maps a non-success HTTP answer to a coded error. op is what
// the client was doing ("create sandbox", "read /home/user/x").
func statusError(sc scope, op string, status int, body []byte) error {
	msg, _ := parseErrorBody(body)
	what := fmt.Sprintf("e2b %s: expected success, got HTTP %d %s", op, status, http.StatusText(status))
	if msg != "" {
		what += ": " + msg
	}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		if sc == scopeEnvd {
			return perr.New(sandbox.CodeProvider, "reopen the sandbox so its access token is fetched again (Open); if it persists the sandbox was recreated under the same ID", "%s (envd rejected the access token)", what)
		}
		return perr.New(sandbox.CodeProvider, fixAPIKey, "%s (the API key was rejected)", what)
	case status == http.StatusBadGateway && sc == scopeEnvd:
		return perr.New(sandbox.CodeSandboxLost, fixLost, "%s (the sandbox no longer exists)", what)
	case status == http.StatusNotFound && sc == scopeAPI:
		return perr.New(sandbox.CodeSandboxLost, fixLost, "%s (the sandbox no longer exists)", what)
	case status == http.StatusNotFound:
		return perr.New(sandbox.CodeNotFound, "check the path; relative paths resolve against the sandbox workspace", "%s", what)
	case status == http.StatusBadRequest:
		return perr.New(sandbox.CodeBadRequest, "fix the request as the message says", "%s", what)
	case status == http.StatusTooManyRequests:
		return perr.New(sandbox.CodeUnavailable, fixCapacity, "%s (E2B capacity or rate limit reached)", what)
	case status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
		return perr.New(sandbox.CodeUnavailable, fixRetry, "%s (E2B is temporarily unavailable)", what)
	case status == http.StatusInsufficientStorage:
		return perr.New(sandbox.CodeProvider, "free disk space in the sandbox or use a template with a larger disk", "%s (the sandbox disk is full)", what)
	case status >= 500:
		return perr.New(sandbox.CodeProvider, fixRetry, "%s (E2B failed)", what)
	default:
		return perr.New(sandbox.CodeProvider, fixReportBug, "%s", what)
	}
}

// transportError wraps a failure to reach E2B at all (DNS, refused, reset,
// context ended). The cause stays in the chain, so errors.Is(err,
// context.Canceled) still works.
func transportError(op, url string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return perr.Wrap(err, sandbox.CodeUnavailable, "retry with a longer deadline", "e2b %s: the request to %s did not finish", op, url)
	}
	return perr.Wrap(err, sandbox.CodeUnavailable, "check network access to "+url+" and E2B_DOMAIN / E2B_API_URL", "e2b %s: expected an answer from %s, the connection failed", op, url)
}

func missingKeyError(op string) error {
	return perr.New(sandbox.CodeProvider, fixAPIKey, "e2b %s: expected an API key, %s is empty", op, EnvAPIKey)
}
