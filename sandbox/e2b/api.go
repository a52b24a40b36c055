package e2b

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

// maxResponseBytes bounds JSON answers (errors, sandbox details, listings).
const maxResponseBytes = 64 << 20

// sandboxIDPattern is the shape of E2B sandbox IDs; anything else is
// rejected before it reaches a URL.
var sandboxIDPattern = regexp.MustCompile(`^[a-z0-9]+$`)

// roundTrip sends req and reads the whole (bounded) body. A status outside
// want becomes a coded error via statusError.
func roundTrip(client *http.Client, req *http.Request, sc scope, op string, want ...int) (int, []byte, error) {
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, transportError(op, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return 0, nil, transportError(op, req.URL.Redacted(), err)
	}
	if !slices.Contains(want, resp.StatusCode) {
		return resp.StatusCode, body, statusError(sc, op, resp.StatusCode, body)
	}
	return resp.StatusCode, body, nil
}

func decodeJSON(op string, body []byte, out any) error {
	if err := json.Unmarshal(body, out); err != nil {
		return perr.Wrap(err, sandbox.CodeProvider, fixReportBug, "e2b %s: expected a JSON answer, could not decode %q", op, truncateForError(string(body)))
	}
	return nil
}

// apiClient talks to the control plane (api.<domain>).
type apiClient struct {
	cfg Config
}

func (c *apiClient) request(ctx context.Context, op, method, path string, in any) (*http.Request, error) {
	if c.cfg.APIKey == "" {
		return nil, missingKeyError(op)
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, perr.Wrap(err, sandbox.CodeBadRequest, "", "e2b %s: could not encode the request", op)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.cfg.APIURL+path, body)
	if err != nil {
		return nil, perr.Wrap(err, sandbox.CodeBadRequest, "check E2B_API_URL / E2B_DOMAIN", "e2b %s: bad API URL %q", op, c.cfg.APIURL)
	}
	req.Header.Set(wire.HeaderAPIKey, c.cfg.APIKey)
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", wire.ContentTypeJSON)
	if in != nil {
		req.Header.Set("Content-Type", wire.ContentTypeJSON)
	}
	return req, nil
}

func checkSandboxID(op, id string) error {
	if !sandboxIDPattern.MatchString(id) {
		return perr.New(sandbox.CodeBadRequest, "pass the sandbox.Info returned by Create", "e2b %s: expected a sandbox ID of lowercase letters and digits, got %q", op, id)
	}
	return nil
}

func sandboxPath(id string) string { return wire.PathSandboxes + "/" + url.PathEscape(id) }

// create starts a sandbox (POST /sandboxes, 201).
func (c *apiClient) create(ctx context.Context, in wire.NewSandbox) (wire.Sandbox, error) {
	const op = "create sandbox"
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := c.request(ctx, op, http.MethodPost, wire.PathSandboxes, in)
	if err != nil {
		return wire.Sandbox{}, err
	}
	_, body, err := roundTrip(c.cfg.HTTPClient, req, scopeAPI, op, http.StatusCreated)
	if err != nil {
		return wire.Sandbox{}, err
	}
	var out wire.Sandbox
	if err := decodeJSON(op, body, &out); err != nil {
		return wire.Sandbox{}, err
	}
	if err := checkSandboxID(op, out.SandboxID); err != nil {
		return wire.Sandbox{}, err
	}
	return out, nil
}

// get fetches a sandbox's details, including its envd access token
// (GET /sandboxes/{id}; 404 is CodeSandboxLost).
func (c *apiClient) get(ctx context.Context, id string) (wire.SandboxDetail, error) {
	op := "open sandbox " + id
	if err := checkSandboxID(op, id); err != nil {
		return wire.SandboxDetail{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := c.request(ctx, op, http.MethodGet, sandboxPath(id), nil)
	if err != nil {
		return wire.SandboxDetail{}, err
	}
	_, body, err := roundTrip(c.cfg.HTTPClient, req, scopeAPI, op, http.StatusOK)
	if err != nil {
		return wire.SandboxDetail{}, err
	}
	var out wire.SandboxDetail
	return out, decodeJSON(op, body, &out)
}

// kill deletes a sandbox (DELETE /sandboxes/{id}); 404 means it is already
// gone, which is success.
func (c *apiClient) kill(ctx context.Context, id string) error {
	op := "destroy sandbox " + id
	if err := checkSandboxID(op, id); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := c.request(ctx, op, http.MethodDelete, sandboxPath(id), nil)
	if err != nil {
		return err
	}
	_, _, err = roundTrip(c.cfg.HTTPClient, req, scopeAPI, op, http.StatusNoContent, http.StatusNotFound)
	return err
}

// setTimeout sets the sandbox to end timeoutSec seconds from now
// (POST /sandboxes/{id}/timeout, 204); it can shorten as well as extend.
func (c *apiClient) setTimeout(ctx context.Context, id string, timeoutSec int) error {
	op := "set timeout of sandbox " + id
	if err := checkSandboxID(op, id); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := c.request(ctx, op, http.MethodPost, sandboxPath(id)+"/timeout", wire.SetTimeout{Timeout: timeoutSec})
	if err != nil {
		return err
	}
	_, _, err = roundTrip(c.cfg.HTTPClient, req, scopeAPI, op, http.StatusNoContent)
	return err
}
