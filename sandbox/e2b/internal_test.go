package e2b

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/e2b/e2bfake"
	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

func TestStatusErrorMapping(t *testing.T) {
	for _, c := range []struct {
		sc     scope
		status int
		body   string
		code   perr.Code
		says   string
	}{
		{scopeAPI, 401, `{"code":401,"message":"Invalid API key"}`, sandbox.CodeProvider, EnvAPIKey},
		{scopeEnvd, 401, `{"code":401,"message":"unauthorized access"}`, sandbox.CodeProvider, "access token"},
		{scopeAPI, 404, `{"code":404,"message":"Sandbox \"x\" doesn't exist"}`, sandbox.CodeSandboxLost, "doesn't exist"},
		{scopeEnvd, 404, `{"code":404,"message":"path '/x' does not exist"}`, sandbox.CodeNotFound, "/x"},
		{scopeEnvd, 400, `{"code":400,"message":"path '/d' is a directory"}`, sandbox.CodeBadRequest, "is a directory"},
		{scopeAPI, 429, `{"code":429,"message":"you have reached the maximum number of concurrent E2B sandboxes (20)"}`, sandbox.CodeUnavailable, "concurrent"},
		{scopeEnvd, 502, `{"sandboxId":"abc","message":"The sandbox was not found","code":502}`, sandbox.CodeSandboxLost, "was not found"},
		{scopeAPI, 502, `bad gateway`, sandbox.CodeUnavailable, "bad gateway"},
		{scopeAPI, 503, ``, sandbox.CodeUnavailable, "503"},
		{scopeAPI, 500, `{"code":500,"message":"boom","error_code":"sandbox_placement_timeout"}`, sandbox.CodeProvider, "sandbox_placement_timeout"},
		{scopeEnvd, 507, `{"code":507,"message":"no space left"}`, sandbox.CodeProvider, "disk is full"},
		{scopeEnvd, 415, ``, sandbox.CodeProvider, "415"},
		{scopeEnvd, 404, `{"code":"not_found","message":"directory not found"}`, sandbox.CodeNotFound, "directory not found"},
	} {
		err := statusError(c.sc, "op", c.status, []byte(c.body))
		if !perr.Has(err, c.code) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("status %d scope %d: %v (code %s), want code %s saying %q", c.status, c.sc, err, perr.CodeOf(err), c.code, c.says)
		}
	}
}

func TestVersionGates(t *testing.T) {
	for _, c := range []struct {
		version   string
		user      string
		rawUpload bool
	}{
		{"0.6.13", "", true}, {"0.5.7", "", true}, {"0.5.6", "", false},
		{"0.3.9", "user", false}, {"garbage", "", true}, {"", "", true}, {"v0.4.0-rc1", "", false},
	} {
		e := newEnvdConn(Config{}.withDefaults(), "abc", "", "", c.version)
		if e.user != c.user || e.rawUpload != c.rawUpload {
			t.Errorf("envd %q: user %q raw %v, want %q %v", c.version, e.user, e.rawUpload, c.user, c.rawUpload)
		}
	}
	e := newEnvdConn(Config{Domain: "example.dev"}.withDefaults(), "abc", "", "", "0.6.13")
	if e.base != "https://49983-abc.example.dev" {
		t.Errorf("envd base = %q", e.base)
	}
	e = newEnvdConn(Config{}.withDefaults(), "abc", "e2b.dev", "", "0.6.13")
	if e.base != "https://49983-abc.e2b.dev" {
		t.Errorf("envd base with the sandbox's domain = %q", e.base)
	}
	if c := (Config{Domain: "x.io"}).withDefaults(); c.APIURL != "https://api.x.io" {
		t.Errorf("API URL = %q", c.APIURL)
	}
}

func fakeBackend(t *testing.T) (*e2bfake.Server, *Backend) {
	t.Helper()
	srv, err := e2bfake.New(e2bfake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	p := NewProvider(Config{APIKey: srv.APIKey(), APIURL: srv.URL, EnvdURL: srv.URL})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	b, err := p.CreateBackend(ctx, sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	return srv, b
}

func TestEnvdRejectsBadToken(t *testing.T) {
	_, b := fakeBackend(t)
	b.envd.token = "stale"
	ctx := context.Background()
	_, err := b.Exec(ctx, sandbox.ExecRequest{Command: "true", TimeoutSec: 10})
	if !perr.Has(err, sandbox.CodeProvider) || !strings.Contains(err.Error(), "access token") {
		t.Errorf("exec with a stale token: %v", err)
	}
	_, err = b.envd.readFile(ctx, "/home/user/x", 10)
	if !perr.Has(err, sandbox.CodeProvider) || !strings.Contains(err.Error(), "401") {
		t.Errorf("GET /files with a stale token: %v", err)
	}
}

func TestStartFailureMapping(t *testing.T) {
	_, b := fakeBackend(t)
	ss, openErr, readErr := b.run(context.Background(), "exec", wire.ProcessConfig{Cmd: Shell, Args: []string{"-c", "true"}, Cwd: "/nonexistent"}, time.Minute, io.Discard, io.Discard)
	if openErr != nil || readErr != nil || ss.started || ss.failure == nil || ss.failure.Code != wire.ConnectInvalidArgument {
		t.Fatalf("bad cwd: %+v %v %v, want only a 0x02 invalid_argument", ss, openErr, readErr)
	}
	if err := connectFailure("exec", ss.failure); !perr.Has(err, sandbox.CodeBadRequest) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("mapped to %v", err)
	}
	if err := b.envd.sendSignal(context.Background(), 999999, wire.SignalKill); err != nil {
		t.Errorf("SIGKILL of an unknown pid (404) = %v, want nil (already gone)", err)
	}
}

// envelopes builds a Start stream from JSON messages; a nil entry ends it
// with 0x02 {}.
func envelopes(msgs ...string) []byte {
	var b []byte
	for _, m := range msgs {
		b = wire.AppendEnvelope(b, wire.FlagMessage, []byte(m))
	}
	return b
}

func TestStartStreamDecoding(t *testing.T) {
	observed := envelopes(
		`{"event":{"start":{"pid":13254}}}`,
		`{"event":{"data":{"stderr":"b29wcwo="}}}`,
		`{"event":{"keepalive":{}}}`,
		`{"event":{"data":{"stdout":"aGVsbG8K"}}}`,
		`{"event":{"end":{"exitCode":3, "exited":true, "status":"exit status 3", "error":"exit status 3"}}}`,
	)
	full := wire.AppendEnvelope(observed, wire.FlagEndStream, []byte(`{}`))
	var ss startStream
	var out, errOut bytes.Buffer
	if err := ss.read(bytes.NewReader(full), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if ss.pid != 13254 || ss.end == nil || ss.end.ExitCode != 3 || out.String() != "hello\n" || errOut.String() != "oops\n" || ss.failure != nil {
		t.Errorf("decoded %+v, stdout %q, stderr %q", ss, out.String(), errOut.String())
	}

	deadline := wire.AppendEnvelope(envelopes(`{"event":{"start":{"pid":7}}}`), wire.FlagEndStream, []byte(`{"error":{"code":"deadline_exceeded","message":"context deadline exceeded"}}`))
	ss = startStream{}
	if err := ss.read(bytes.NewReader(deadline), io.Discard, io.Discard); err != nil || ss.failure == nil || ss.failure.Code != "deadline_exceeded" || ss.end != nil {
		t.Errorf("deadline stream: %+v, %v", ss, err)
	}

	for name, stream := range map[string][]byte{
		"no 0x02":          observed,
		"cut in a header":  append(bytes.Clone(observed), 0x02, 0, 0),
		"cut in a payload": append(bytes.Clone(observed), 0x02, 0, 0, 0, 9, '{'),
	} {
		ss = startStream{}
		err := ss.read(bytes.NewReader(stream), io.Discard, io.Discard)
		if !errors.Is(err, errTruncated) || ss.pid != 13254 {
			t.Errorf("%s: %v (pid %d), want errTruncated with the pid known", name, err, ss.pid)
		}
	}
	for name, stream := range map[string][]byte{
		"compressed": wire.AppendEnvelope(nil, wire.FlagCompressed, []byte(`{}`)),
		"bad JSON":   envelopes(`{"event":`),
		"bad end":    wire.AppendEnvelope(nil, wire.FlagEndStream, []byte(`nope`)),
		"too large":  {0, 0xff, 0xff, 0xff, 0xff},
		"bad base64": envelopes(`{"event":{"data":{"stdout":"***"}}}`),
	} {
		ss = startStream{}
		if err := ss.read(bytes.NewReader(stream), io.Discard, io.Discard); err == nil || errors.Is(err, errTruncated) {
			t.Errorf("%s: %v, want a protocol error", name, err)
		}
	}
}

// FuzzStartStream feeds arbitrary bytes to the Start stream decoder: it must
// never panic, and a nil error means a well-formed end-of-stream envelope.
func FuzzStartStream(f *testing.F) {
	f.Add(wire.AppendEnvelope(envelopes(`{"event":{"start":{"pid":1}}}`, `{"event":{"data":{"stdout":"aGk="}}}`, `{"event":{"end":{"exited":true,"status":"exit status 0"}}}`), wire.FlagEndStream, []byte(`{}`)))
	f.Add(wire.AppendEnvelope(nil, wire.FlagEndStream, []byte(`{"error":{"code":"invalid_argument","message":"cwd '/x' does not exist"}}`)))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var ss startStream
		err := ss.read(bytes.NewReader(data), io.Discard, io.Discard)
		if err == nil {
			// The last envelope read must have been a valid 0x02.
			if len(data) < wire.EnvelopeHeaderLen {
				t.Fatalf("nil error from %d bytes", len(data))
			}
		}
		if ss.failure != nil {
			if _, err := json.Marshal(ss.failure); err != nil {
				t.Fatal(err)
			}
		}
	})
}
