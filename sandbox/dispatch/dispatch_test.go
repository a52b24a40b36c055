package dispatch_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/dispatch"
	"github.com/polos-run/polos/sandbox/local"
	"github.com/polos-run/polos/sandbox/sandboxtest"
)

// startServer runs an embedded nats-server on a random port.
func startServer(t testing.TB, maxPayload int32) *server.Server {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, MaxPayload: maxPayload}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// testKey is the host key of every host these tests start, so any of them
// serves the sandboxes another created (as hosts sharing a data dir do).
var testKey = func() dispatch.Key {
	k, err := dispatch.NewKey()
	if err != nil {
		panic(err)
	}
	return k
}()

// testPolicy lets workspaces live anywhere under the temporary directory,
// where t.TempDir puts them.
var testPolicy = dispatch.Policy{WorkspaceRoots: []string{os.TempDir()}}

func startHost(t testing.TB, s *server.Server, p sandbox.Provider) (*dispatch.Host, *nats.Conn) {
	t.Helper()
	return startHostWith(t, s, dispatch.HostOptions{Key: testKey, Policy: testPolicy}, p)
}

func startHostWith(t testing.TB, s *server.Server, o dispatch.HostOptions, p ...sandbox.Provider) (*dispatch.Host, *nats.Conn) {
	t.Helper()
	nc := connect(t, s)
	h, err := dispatch.NewHost(nc, o, p...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, nc
}

func newClient(t testing.TB, s *server.Server, opts ...dispatch.ClientOption) *dispatch.Client {
	t.Helper()
	c, err := dispatch.NewClient(connect(t, s), "", sandbox.ProviderLocal, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func localSpec(t testing.TB) sandbox.Spec {
	return sandbox.Spec{Provider: sandbox.ProviderLocal, Owner: "run-1", WorkspaceDir: filepath.Join(t.TempDir(), "ws")}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, what string, err error, code perr.Code) {
	t.Helper()
	if !perr.Has(err, code) {
		t.Fatalf("%s: got %v, want code %s", what, err, code)
	}
}

func checkFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConformance runs the whole provider suite through a host: every
// error code must survive the trip.
func TestConformance(t *testing.T) {
	s := startServer(t, 0)
	startHost(t, s, local.New())
	sandboxtest.Run(t, func(t *testing.T) (sandbox.Provider, sandbox.Spec) {
		return newClient(t, s), localSpec(t)
	})
}

func TestNoHostIsUnavailable(t *testing.T) {
	s := startServer(t, 0)
	c := newClient(t, s)
	_, err := c.Create(ctxFor(t), localSpec(t))
	wantCode(t, "create with no host", err, sandbox.CodeUnavailable)
	if !strings.Contains(err.Error(), "polosd --role sandbox") {
		t.Errorf("error does not say how to start a host: %v", err)
	}
}

func TestOpenLostSandbox(t *testing.T) {
	s := startServer(t, 0)
	startHost(t, s, local.New())
	c := newClient(t, s)
	spec := localSpec(t)
	sb, err := c.Create(ctxFor(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Write(ctxFor(t), sandbox.WriteRequest{Path: "a.txt", Content: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(sb.Info().Workspace); err != nil {
		t.Fatal(err)
	}
	_, err = sb.Read(ctxFor(t), sandbox.ReadRequest{Path: "a.txt"})
	wantCode(t, "read in a vanished workspace", err, sandbox.CodeSandboxLost)
	_, err = c.Open(ctxFor(t), sb.Info(), spec)
	wantCode(t, "open of a vanished workspace", err, sandbox.CodeSandboxLost)
}

// TestMalformedPayloads sends hostile payloads with a plain NATS client:
// each gets a coded reply, and the host keeps serving.
func TestMalformedPayloads(t *testing.T) {
	s := startServer(t, 0)
	startHost(t, s, local.New())
	nc := connect(t, s)
	sb, err := newClient(t, s).Create(ctxFor(t), localSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := json.Marshal(sb.Info())
	info := `"run":"run-1","info":` + string(sealed)
	cases := []struct {
		op, payload string
		code        perr.Code
	}{
		{"read", "", sandbox.CodeBadRequest},
		{"read", "not json", sandbox.CodeBadRequest},
		{"read", "null", sandbox.CodeBadRequest},
		{"read", "[]", sandbox.CodeBadRequest},
		{"read", "{}", sandbox.CodeBadRequest},
		{"read", `{` + info + `}`, sandbox.CodeBadRequest},
		{"read", `{` + info + `,"req":"a string"}`, sandbox.CodeBadRequest},
		{"exec", `{` + info + `,"req":{"command":5}}`, sandbox.CodeBadRequest},
		{"exec", `{"info":{"provider":"docker","id":"x"},"req":{"command":"true"}}`, sandbox.CodeBadRequest},
		{"create", `{"spec":7}`, sandbox.CodeBadRequest},
		{"create", `{"run":"run-1","spec":{}}`, sandbox.CodeBadRequest},
		{"create", `{"run":"a.b","spec":{}}`, sandbox.CodeBadRequest},
		{"create", `{"spec":{"workspace_dir":"/tmp/x"}}`, sandbox.CodeNotYours},
		{"destroy", `{"info":null}`, sandbox.CodeBadRequest},
		{"share", `{` + info + `,"to":"a b"}`, sandbox.CodeBadRequest},
		{"frobnicate", `{` + info + `,"req":{}}`, sandbox.CodeBadRequest},
		{"grep", `{` + info + `,"req":{"pattern":"("}}`, sandbox.CodeBadRequest},
		{"read", `{"info":{"provider":"local","id":"x","workspace":"/"},"req":{"path":"etc/passwd"}}`, sandbox.CodeUnsealed},
	}
	for _, c := range cases {
		msg, err := nc.Request(dispatch.Subject("default", "local", c.op), []byte(c.payload), 10*time.Second)
		if err != nil {
			t.Fatalf("%s %q: no reply: %v", c.op, c.payload, err)
		}
		var rep dispatch.Reply
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			t.Fatalf("%s %q: reply is not JSON: %q", c.op, c.payload, msg.Data)
		}
		if rep.Error == nil || rep.Error.Code != string(c.code) || rep.Error.Message == "" {
			t.Errorf("%s %q: reply %s, want a %s error", c.op, c.payload, msg.Data, c.code)
		}
	}
	if _, err := sb.Exec(ctxFor(t), sandbox.ExecRequest{Command: "true"}); err != nil {
		t.Fatalf("host stopped serving after malformed requests: %v", err)
	}
}

func TestMaxPayload(t *testing.T) {
	const max = 64 << 10
	s := startServer(t, max)
	startHost(t, s, local.New())
	c := newClient(t, s)
	sb, err := c.Create(ctxFor(t), localSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = sb.Write(ctxFor(t), sandbox.WriteRequest{Path: "big.txt", Content: strings.Repeat("a", max)})
	wantCode(t, "write over the max payload", err, sandbox.CodeTooLarge)
	if !strings.Contains(err.Error(), "max payload") {
		t.Errorf("error does not name the max payload: %v", err)
	}
	if _, err := sb.Exec(ctxFor(t), sandbox.ExecRequest{Command: "head -c 100000 /dev/zero | tr '\\000' a > big.txt"}); err != nil {
		t.Fatal(err)
	}
	_, err = sb.Read(ctxFor(t), sandbox.ReadRequest{Path: "big.txt"})
	wantCode(t, "read with a reply over the max payload", err, sandbox.CodeTooLarge)
	r, err := sb.Read(ctxFor(t), sandbox.ReadRequest{Path: "big.txt", Limit: 1})
	if err != nil || r.TotalLines != 1 {
		// One line of 100,000 bytes is still too large: the error must say so.
		wantCode(t, "read of one long line", err, sandbox.CodeTooLarge)
	}
}

// TestHostKilledMidRun starts an exec on host A, kills A's connection (as a
// crash would), and checks the exec fails with CodeUnavailable while every
// later request is served by host B, which reopens the sandbox from its Info.
func TestHostKilledMidRun(t *testing.T) {
	s := startServer(t, 0)
	hostA, ncA := startHost(t, s, local.New())
	c := newClient(t, s, dispatch.WithExecMargin(2*time.Second))
	sb, err := c.Create(ctxFor(t), localSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Write(ctxFor(t), sandbox.WriteRequest{Path: "state.txt", Content: "before\n"}); err != nil {
		t.Fatal(err)
	}

	execErr := make(chan error, 1)
	go func() {
		_, err := sb.Exec(context.Background(), sandbox.ExecRequest{Command: "touch started; sleep 3", TimeoutSec: 3})
		execErr <- err
	}()
	checkFor(t, "exec running on host A", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(sb.Info().Workspace, "started"))
		return err == nil
	})
	if hostA.Served() != 2 {
		t.Fatalf("host A served %d requests, want 2 (create, write)", hostA.Served())
	}
	hostB, _ := startHost(t, s, local.New())
	subs := s.NumSubscriptions()
	ncA.Close()
	checkFor(t, "host A's subscription gone", 20*time.Second, func() bool { return s.NumSubscriptions() == subs-1 })

	select {
	case err := <-execErr:
		wantCode(t, "exec on a killed host", err, sandbox.CodeUnavailable)
	case <-time.After(60 * time.Second):
		t.Fatal("exec on a killed host did not time out")
	}
	for i := 0; i < 5; i++ {
		r, err := sb.Read(ctxFor(t), sandbox.ReadRequest{Path: "state.txt"})
		if err != nil || r.Content != "before\n" {
			t.Fatalf("read after host A died: %+v, %v", r, err)
		}
	}
	if hostB.Served() != 5 {
		t.Errorf("host B served %d requests, want 5", hostB.Served())
	}
}

func TestNamesAreSubjectTokens(t *testing.T) {
	s := startServer(t, 0)
	nc := connect(t, s)
	if _, err := dispatch.NewClient(nc, "a.b", "local"); !perr.Has(err, sandbox.CodeBadRequest) {
		t.Errorf("namespace with a dot accepted: %v", err)
	}
	if _, err := dispatch.NewClient(nc, "", "lo*"); !perr.Has(err, sandbox.CodeBadRequest) {
		t.Errorf("provider with '*' accepted: %v", err)
	}
	if got := dispatch.Subject("default", "docker", "exec"); got != "polos.default.sandbox.docker.exec" {
		t.Errorf("Subject = %q", got)
	}
}

// TestHostCloseKillsRunningExec: closing a host answers a running exec as
// timed out instead of leaving it running.
func TestHostCloseKillsRunningExec(t *testing.T) {
	s := startServer(t, 0)
	h, _ := startHost(t, s, local.New())
	sb, err := newClient(t, s).Create(ctxFor(t), localSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		res sandbox.ExecResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := sb.Exec(context.Background(), sandbox.ExecRequest{Command: "touch started; sleep 1000", TimeoutSec: 600})
		done <- result{res, err}
	}()
	checkFor(t, "exec started", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(sb.Info().Workspace, "started"))
		return err == nil
	})
	closed := make(chan struct{})
	go func() { h.Close(); close(closed) }()
	select {
	case r := <-done:
		if r.err != nil || !r.res.TimedOut || r.res.ExitCode != -1 {
			t.Errorf("exec on a closing host = %+v, %v; want timed out", r.res, r.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("exec not answered when its host closed")
	}
	<-closed
}
