package e2b

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

// envd versions that change what the client must send.
var (
	versionDefaultUser = [3]int{0, 4, 0} // before: the user must be named explicitly
	versionOctetUpload = [3]int{0, 5, 7} // from: POST /files accepts a raw body
)

// envdConn reaches the envd daemon of one sandbox.
type envdConn struct {
	client     *http.Client
	base       string // e.g. https://49983-<id>.e2b.app, or the override
	sandboxID  string
	token      string // envdAccessToken; empty when the sandbox is not secure
	user       string // Basic-auth user on RPCs, username= on /files; "" = envd default
	rawUpload  bool   // envd >= 0.5.7: upload with application/octet-stream
	reqTimeout time.Duration
}

func newEnvdConn(cfg Config, sandboxID, domain, token, envdVersion string) *envdConn {
	base := cfg.EnvdURL
	if base == "" {
		if domain == "" {
			domain = cfg.Domain
		}
		base = fmt.Sprintf("https://%d-%s.%s", wire.EnvdPort, sandboxID, domain)
	}
	v, known := parseVersion(envdVersion)
	user := cfg.User
	if user == "" && known && versionLess(v, versionDefaultUser) {
		user = "user"
	}
	return &envdConn{
		client:     cfg.HTTPClient,
		base:       base,
		sandboxID:  sandboxID,
		token:      token,
		user:       user,
		rawUpload:  !known || !versionLess(v, versionOctetUpload),
		reqTimeout: cfg.RequestTimeout,
	}
}

// parseVersion reads "MAJOR.MINOR.PATCH" (a suffix after '-' or '+' is
// ignored). known is false for anything else; callers then assume a current
// envd.
func parseVersion(s string) (v [3]int, known bool) {
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, false
		}
		v[i] = n
	}
	return v, true
}

func versionLess(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// request builds an envd request with the routing, token and user headers.
func (e *envdConn) request(ctx context.Context, method, path string, query url.Values, body io.Reader) (*http.Request, error) {
	u := e.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, perr.Wrap(err, sandbox.CodeBadRequest, "check E2B_SANDBOX_URL / E2B_DOMAIN", "e2b: bad envd URL %q", u)
	}
	req.Header.Set(wire.HeaderSandboxID, e.sandboxID)
	req.Header.Set(wire.HeaderSandboxPort, strconv.Itoa(wire.EnvdPort))
	req.Header.Set("User-Agent", userAgent)
	if e.token != "" {
		req.Header.Set(wire.HeaderAccessToken, e.token)
	}
	if e.user != "" && path != wire.PathFiles { // /files takes username= instead

		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(e.user+":")))
	}
	return req, nil
}

// filesQuery is the query of /files: the path, and the user when set.
func (e *envdConn) filesQuery(p string) url.Values {
	q := url.Values{"path": {p}}
	if e.user != "" {
		q.Set("username", e.user)
	}
	return q
}

// unary calls a unary Connect method with JSON bodies. On failure it also
// returns the HTTP status (0 when there was no answer).
func (e *envdConn) unary(ctx context.Context, op, path string, in, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, e.reqTimeout)
	defer cancel()
	b, err := json.Marshal(in)
	if err != nil {
		return 0, perr.Wrap(err, sandbox.CodeBadRequest, "", "e2b %s: could not encode the request", op)
	}
	req, err := e.request(ctx, http.MethodPost, path, nil, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", wire.ContentTypeJSON)
	req.Header.Set(wire.HeaderConnectProtocol, "1")
	status, body, err := roundTrip(e.client, req, scopeEnvd, op, http.StatusOK)
	if err != nil {
		return status, err
	}
	return status, decodeJSON(op, body, out)
}

// startProcess opens a process.Process/Start stream. timeout becomes
// Connect-Timeout-Ms, which envd also uses as the process lifetime. The
// caller reads and closes the body; a non-200 answer is returned as an error.
func (e *envdConn) startProcess(ctx context.Context, op string, in wire.StartRequest, timeout time.Duration) (io.ReadCloser, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, perr.Wrap(err, sandbox.CodeBadRequest, "", "e2b %s: could not encode the request", op)
	}
	req, err := e.request(ctx, http.MethodPost, wire.PathStart, nil, bytes.NewReader(wire.AppendEnvelope(nil, wire.FlagMessage, b)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", wire.ContentTypeConnectJSON)
	req.Header.Set(wire.HeaderConnectProtocol, "1")
	req.Header.Set(wire.HeaderKeepalive, keepaliveIntervalSec)
	if ms := timeout.Milliseconds(); ms > 0 {
		req.Header.Set(wire.HeaderConnectTimeout, strconv.FormatInt(ms, 10))
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, transportError(op, req.URL.Redacted(), err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		return nil, statusError(scopeEnvd, op, resp.StatusCode, body)
	}
	return resp.Body, nil
}

// sendSignal signals a process by pid. A process that already ended
// (not_found) is not an error: the goal, a dead process, holds.
func (e *envdConn) sendSignal(ctx context.Context, pid uint32, signal string) error {
	op := fmt.Sprintf("signal process %d", pid)
	sig, _ := json.Marshal(signal)
	status, err := e.unary(ctx, op, wire.PathSendSignal, wire.SendSignalRequest{Process: wire.ProcessSelector{Pid: pid}, Signal: sig}, &struct{}{})
	if status == http.StatusNotFound {
		return nil
	}
	return err
}

// listDir lists path up to depth levels (filesystem.Filesystem/ListDir).
func (e *envdConn) listDir(ctx context.Context, p string, depth uint32) ([]wire.EntryInfo, error) {
	var out wire.ListDirResponse
	_, err := e.unary(ctx, "list "+p, wire.PathListDir, wire.ListDirRequest{Path: p, Depth: depth}, &out)
	return out.Entries, err
}

// readFile downloads p, reading at most maxBytes+1 bytes of it.
func (e *envdConn) readFile(ctx context.Context, p string, maxBytes int64) ([]byte, error) {
	op := "read " + p
	ctx, cancel := context.WithTimeout(ctx, e.reqTimeout)
	defer cancel()
	req, err := e.request(ctx, http.MethodGet, wire.PathFiles, e.filesQuery(p), nil)
	if err != nil {
		return nil, err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, transportError(op, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		return nil, statusError(scopeEnvd, op, resp.StatusCode, body)
	}
	if maxBytes < 0 {
		maxBytes = 0
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBytes+1))
	if err != nil {
		return nil, transportError(op, req.URL.Redacted(), err)
	}
	return data, nil
}

// writeFile uploads data to p; envd creates parent directories and
// truncates an existing file. The body is application/octet-stream on envd
// >= 0.5.7 (the bytes travel as they are, no form encoding, no file name
// quoting) and multipart/form-data field "file" on older envd, the only
// form those accept.
func (e *envdConn) writeFile(ctx context.Context, p string, data []byte) error {
	op := "write " + p
	ctx, cancel := context.WithTimeout(ctx, e.reqTimeout)
	defer cancel()
	var body bytes.Buffer
	contentType := wire.ContentTypeOctetStream
	if e.rawUpload {
		body.Write(data)
	} else {
		mw := multipart.NewWriter(&body)
		part, err := mw.CreateFormFile(wire.FormFieldFile, p)
		if err == nil {
			_, err = part.Write(data)
		}
		if err == nil {
			err = mw.Close()
		}
		if err != nil {
			return perr.Wrap(err, sandbox.CodeProvider, fixReportBug, "e2b %s: could not build the upload", op)
		}
		contentType = mw.FormDataContentType()
	}
	req, err := e.request(ctx, http.MethodPost, wire.PathFiles, e.filesQuery(p), &body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	_, respBody, err := roundTrip(e.client, req, scopeEnvd, op, http.StatusOK)
	if err != nil {
		return err
	}
	var entries []wire.UploadedEntry
	return decodeJSON(op, respBody, &entries)
}

// makeDir creates p and its parents; an existing directory is success.
func (e *envdConn) makeDir(ctx context.Context, p string) error {
	status, err := e.unary(ctx, "create directory "+p, wire.PathMakeDir, wire.MakeDirRequest{Path: p}, &struct{}{})
	if status == http.StatusConflict { // already_exists
		return nil
	}
	return err
}
