package dispatch_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/nats-io/nats.go"

	"github.com/polos-run/polos/images"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/dispatch"
	"github.com/polos-run/polos/sandbox/docker"
	"github.com/polos-run/polos/sandbox/local"
)

// The trust tests play the agent's seat and any other NATS client: they
// send requests a plain NATS client can send (forged, altered, foreign
// Infos; specs asking for mounts and images) to hosts serving the real
// local and docker providers on a real embedded NATS server, and check
// each is refused with its code and that nothing ran: no marker file, no
// directory, no container.

const trustHostID = "polos-test-dispatch-trust"

// trustEnv is a host whose only workspace root is root, and a directory
// outside it where a command that ran would leave a marker.
type trustEnv struct {
	srv     *testutil.Server
	nc      *nats.Conn // a plain client: what an attacker on the bus has
	client  *dispatch.Client
	root    string
	outside string
	marker  string
}

func newTrustEnv(t *testing.T, pol dispatch.Policy, providers ...sandbox.Provider) *trustEnv {
	t.Helper()
	srv := testutil.StartServer(t)
	e := &trustEnv{srv: srv, root: resolved(t, t.TempDir()), outside: resolved(t, t.TempDir())}
	e.marker = filepath.Join(e.outside, "pwned")
	pol.WorkspaceRoots = append(pol.WorkspaceRoots, e.root)
	if len(providers) == 0 {
		providers = []sandbox.Provider{local.New()}
	}
	h, err := dispatch.NewHost(srv.NC, dispatch.HostOptions{Namespace: "default", Key: testKey, Policy: pol}, providers...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	e.nc = srv.ConnectAs(t, "executor")
	if e.client, err = dispatch.NewClient(e.nc, "default", sandbox.ProviderLocal); err != nil {
		t.Fatal(err)
	}
	return e
}

func resolved(t *testing.T, dir string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// create makes a local sandbox for run in a fresh directory under the root.
func (e *trustEnv) create(t *testing.T, run string) sandbox.Sandbox {
	t.Helper()
	sb, err := e.client.Create(sandbox.WithRun(ctxFor(t), run), sandbox.Spec{WorkspaceDir: filepath.Join(e.root, run)})
	if err != nil {
		t.Fatalf("create for %s: %v", run, err)
	}
	return sb
}

// send sends a raw request on provider's op subject and returns the reply's
// error code ("" for success).
func (e *trustEnv) send(t *testing.T, provider, op string, req dispatch.Request) (perr.Code, dispatch.Reply) {
	t.Helper()
	data, _ := json.Marshal(req)
	msg, err := e.nc.Request(dispatch.Subject("default", provider, op), data, time.Minute)
	if err != nil {
		t.Fatalf("%s %s: no reply: %v", provider, op, err)
	}
	var rep dispatch.Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		t.Fatalf("reply is not JSON: %q", msg.Data)
	}
	if rep.Error == nil {
		return "", rep
	}
	return perr.Code(rep.Error.Code), rep
}

func (e *trustEnv) noMarker(t *testing.T, what string) {
	t.Helper()
	if _, err := os.Stat(e.marker); err == nil {
		t.Fatalf("%s: the command ran (marker %s exists)", what, e.marker)
	}
}

func toolReq(t *testing.T, v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostRefusesInfosItDidNotSealForTheRun: forged, altered, foreign and
// old unsealed Infos are refused for every operation, with their code, and
// no command runs.
func TestHostRefusesInfosItDidNotSealForTheRun(t *testing.T) {
	e := newTrustEnv(t, dispatch.Policy{})
	a := e.create(t, "run-a").Info()
	b := e.create(t, "run-b").Info()

	// An Info sealed by a host holding another key.
	otherKey, _ := dispatch.NewKey()
	other := newTrustEnvWithKey(t, otherKey)
	foreign := other.create(t, "run-a").Info()

	change := func(f func(*sandbox.Info)) sandbox.Info { i := a; f(&i); return i }
	flip := func(s string) string {
		last := s[len(s)-1]
		if last == 'A' {
			return s[:len(s)-1] + "B"
		}
		return s[:len(s)-1] + "A"
	}
	cases := []struct {
		name string
		run  string
		info sandbox.Info
		code perr.Code
	}{
		{"workspace / without a seal", "run-a", sandbox.Info{Provider: "local", ID: "x", Workspace: "/"}, sandbox.CodeUnsealed},
		{"workspace / with a made-up seal", "run-a", sandbox.Info{Provider: "local", ID: "x", Workspace: "/", Owner: "run-a", Seal: "v1." + testKey.ID() + ".AAAA"}, sandbox.CodeForged},
		{"valid seal, workspace changed to /", "run-a", change(func(i *sandbox.Info) { i.Workspace = "/" }), sandbox.CodeForged},
		{"valid seal, workspace changed to the outside dir", "run-a", change(func(i *sandbox.Info) { i.Workspace = e.outside }), sandbox.CodeForged},
		{"valid seal, workspace of another run", "run-a", change(func(i *sandbox.Info) { i.Workspace = b.Workspace }), sandbox.CodeForged},
		{"valid seal, owner changed", "run-b", change(func(i *sandbox.Info) { i.Owner = "run-b" }), sandbox.CodeForged},
		{"valid seal, id changed", "run-a", change(func(i *sandbox.Info) { i.ID = b.ID }), sandbox.CodeForged},
		{"tampered seal", "run-a", change(func(i *sandbox.Info) { i.Seal = flip(i.Seal) }), sandbox.CodeForged},
		{"truncated seal", "run-a", change(func(i *sandbox.Info) { i.Seal = i.Seal[:len(i.Seal)-2] }), sandbox.CodeForged},
		{"seal of another host key", "run-a", foreign, sandbox.CodeForged},
		{"run A's valid Info used by run B", "run-b", a, sandbox.CodeNotYours},
		{"no run", "", a, sandbox.CodeNotYours},
		{"old unsealed Info of a real sandbox", "run-a", change(func(i *sandbox.Info) { i.Owner, i.Seal = "", "" }), sandbox.CodeUnsealed},
	}
	touch := "touch " + e.marker
	ops := []struct {
		op  string
		req json.RawMessage
	}{
		{sandbox.OpExec, toolReq(t, sandbox.ExecRequest{Command: touch, Cwd: "/"})},
		{sandbox.OpWrite, toolReq(t, sandbox.WriteRequest{Path: e.marker, Content: "x"})},
		{sandbox.OpRead, toolReq(t, sandbox.ReadRequest{Path: "/etc/passwd"})},
		{sandbox.OpGlob, toolReq(t, sandbox.GlobRequest{Pattern: "*", Cwd: "/"})},
		{dispatch.OpOpen, nil},
		{dispatch.OpShare, nil},
		{sandbox.OpDestroy, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, o := range ops {
				info := tc.info
				code, rep := e.send(t, "local", o.op, dispatch.Request{Run: tc.run, Info: &info, Req: o.req, To: "run-c"})
				if code != tc.code {
					t.Errorf("%s: reply %+v, want %s", o.op, rep, tc.code)
				} else if rep.Error.Fix == "" {
					t.Errorf("%s: %s error without a fix: %+v", o.op, code, rep.Error)
				}
				e.noMarker(t, o.op)
			}
			if tc.code == sandbox.CodeUnsealed && !sandbox.MustRecreate(&perr.Error{Code: tc.code}) {
				t.Error("an unsealed Info must make the agent re-create its sandbox")
			}
		})
	}
	// Run A's sandbox still works for run A, and run A's commands run.
	sb, err := e.client.Open(sandbox.WithRun(ctxFor(t), "run-a"), a, sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := sb.Exec(ctxFor(t), sandbox.ExecRequest{Command: "touch ok"}); err != nil || res.ExitCode != 0 {
		t.Fatalf("run A's own exec: %+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(a.Workspace, "ok")); err != nil {
		t.Fatalf("run A's exec did not run: %v", err)
	}
}

func newTrustEnvWithKey(t *testing.T, k dispatch.Key) *trustEnv {
	t.Helper()
	srv := testutil.StartServer(t)
	e := &trustEnv{srv: srv, root: resolved(t, t.TempDir())}
	h, err := dispatch.NewHost(srv.NC, dispatch.HostOptions{Namespace: "default", Key: k, Policy: dispatch.Policy{WorkspaceRoots: []string{e.root}}}, local.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if e.client, err = dispatch.NewClient(srv.NC, "default", sandbox.ProviderLocal); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestCreateChecksTheHostPolicy: a create may not name a workspace outside
// the roots (directly, by a symlink, relative or with ".."), an image,
// template, network or env the host does not allow, or another run as
// owner; nothing is created.
func TestCreateChecksTheHostPolicy(t *testing.T) {
	e := newTrustEnv(t, dispatch.Policy{Env: []string{"GREETING"}})
	if err := os.Symlink(e.outside, filepath.Join(e.root, "link")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		run  string
		spec sandbox.Spec
		code perr.Code
		gone string // a path the create must not have made
	}{
		{"workspace /", "run-a", sandbox.Spec{WorkspaceDir: "/"}, sandbox.CodeNotAllowed, ""},
		{"workspace outside the roots", "run-a", sandbox.Spec{WorkspaceDir: filepath.Join(e.outside, "ws")}, sandbox.CodeNotAllowed, filepath.Join(e.outside, "ws")},
		{"workspace through a symlink out of the root", "run-a", sandbox.Spec{WorkspaceDir: filepath.Join(e.root, "link", "ws")}, sandbox.CodeNotAllowed, filepath.Join(e.outside, "ws")},
		{"workspace the symlink itself", "run-a", sandbox.Spec{WorkspaceDir: filepath.Join(e.root, "link")}, sandbox.CodeNotAllowed, ""},
		{"workspace with ..", "run-a", sandbox.Spec{WorkspaceDir: e.root + "/../" + filepath.Base(e.outside) + "/ws"}, sandbox.CodeBadRequest, filepath.Join(e.outside, "ws")},
		{"relative workspace", "run-a", sandbox.Spec{WorkspaceDir: "ws"}, sandbox.CodeBadRequest, ""},
		{"env not allowed", "run-a", sandbox.Spec{WorkspaceDir: filepath.Join(e.root, "env"), Env: map[string]string{"LD_PRELOAD": "/tmp/x.so", "GREETING": "hi"}}, sandbox.CodeNotAllowed, filepath.Join(e.root, "env")},
		{"template not allowed", "run-a", sandbox.Spec{WorkspaceDir: filepath.Join(e.root, "tpl"), Template: "attacker/template"}, sandbox.CodeNotAllowed, filepath.Join(e.root, "tpl")},
		{"image not allowed", "run-a", sandbox.Spec{WorkspaceDir: filepath.Join(e.root, "img"), Image: "alpine:3"}, sandbox.CodeNotAllowed, filepath.Join(e.root, "img")},
		{"network not allowed", "run-a", sandbox.Spec{WorkspaceDir: filepath.Join(e.root, "net"), Network: "host"}, sandbox.CodeNotAllowed, filepath.Join(e.root, "net")},
		{"owner is another run", "run-a", sandbox.Spec{WorkspaceDir: filepath.Join(e.root, "own"), Owner: "run-b"}, sandbox.CodeNotYours, filepath.Join(e.root, "own")},
		{"no run", "", sandbox.Spec{WorkspaceDir: filepath.Join(e.root, "norun")}, sandbox.CodeNotYours, filepath.Join(e.root, "norun")},
		{"provider of another subject", "run-a", sandbox.Spec{Provider: "docker", WorkspaceDir: filepath.Join(e.root, "prov")}, sandbox.CodeBadRequest, filepath.Join(e.root, "prov")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, rep := e.send(t, "local", sandbox.OpCreate, dispatch.Request{Run: tc.run, Spec: tc.spec})
			if code != tc.code {
				t.Fatalf("reply %+v, want %s", rep, tc.code)
			}
			if rep.Error.Fix == "" {
				t.Errorf("error without a fix: %+v", rep.Error)
			}
			if tc.gone != "" {
				if _, err := os.Stat(tc.gone); err == nil {
					t.Errorf("the refused create made %s", tc.gone)
				}
			}
		})
	}
	// What the policy allows is created: env GREETING, a workspace under the root.
	code, rep := e.send(t, "local", sandbox.OpCreate, dispatch.Request{Run: "run-a", Spec: sandbox.Spec{WorkspaceDir: filepath.Join(e.root, "fine"), Env: map[string]string{"GREETING": "hi"}}})
	if code != "" {
		t.Fatalf("allowed create refused: %+v", rep)
	}
	var info sandbox.Info
	_ = json.Unmarshal(rep.Result, &info)
	if info.Owner != "run-a" || info.Seal == "" || info.Workspace != filepath.Join(e.root, "fine") {
		t.Fatalf("create returned %+v", info)
	}
	// Later requests may not smuggle env either.
	code, rep = e.send(t, "local", sandbox.OpExec, dispatch.Request{Run: "run-a", Info: &info,
		Spec: sandbox.Spec{Env: map[string]string{"BASH_ENV": e.marker}}, Req: toolReq(t, sandbox.ExecRequest{Command: "true"})})
	if code != sandbox.CodeNotAllowed {
		t.Fatalf("exec with a spec env not allowed: %+v", rep)
	}
}

// TestDockerCreateChecksTheHostPolicy: against the real engine, a docker
// create may not bind-mount a host directory outside the roots, nor name
// an image or network the host does not allow; no container is created.
// What is allowed works, sealed.
func TestDockerCreateChecksTheHostPolicy(t *testing.T) {
	p := dockerProvider(t)
	e := newTrustEnv(t, dispatch.Policy{Images: []string{images.BusyboxRef}}, p)
	if err := os.Symlink("/etc", filepath.Join(e.root, "etc")); err != nil {
		t.Fatal(err)
	}
	spec := func(f func(*sandbox.Spec)) sandbox.Spec {
		s := sandbox.Spec{Image: images.BusyboxRef, Memory: "64m"}
		f(&s)
		return s
	}
	cases := []struct {
		name string
		spec sandbox.Spec
		code perr.Code
	}{
		{"bind mount of /", spec(func(s *sandbox.Spec) { s.WorkspaceDir = "/" }), sandbox.CodeNotAllowed},
		{"bind mount of /etc", spec(func(s *sandbox.Spec) { s.WorkspaceDir = "/etc" }), sandbox.CodeNotAllowed},
		{"bind mount of the docker socket's dir", spec(func(s *sandbox.Spec) { s.WorkspaceDir = "/var/run" }), sandbox.CodeNotAllowed},
		{"bind mount through a symlink in the root", spec(func(s *sandbox.Spec) { s.WorkspaceDir = filepath.Join(e.root, "etc") }), sandbox.CodeNotAllowed},
		{"image not allowed", spec(func(s *sandbox.Spec) { s.Image = "alpine:3" }), sandbox.CodeNotAllowed},
		{"image not allowed, same name other tag", spec(func(s *sandbox.Spec) { s.Image = "polos/busybox:latest" }), sandbox.CodeNotAllowed},
		{"network bridge not allowed", spec(func(s *sandbox.Spec) { s.Network = "bridge" }), sandbox.CodeNotAllowed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, rep := e.send(t, "docker", sandbox.OpCreate, dispatch.Request{Run: "run-a", Spec: tc.spec})
			if code != tc.code {
				t.Fatalf("reply %+v, want %s", rep, tc.code)
			}
			if n := containers(t, p); n != 0 {
				t.Fatalf("a refused create left %d containers", n)
			}
		})
	}
	// Allowed: the busybox image with a workspace under the root.
	ws := filepath.Join(e.root, "ws")
	if err := os.Mkdir(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(ws, images.SandboxUID, images.SandboxGID); err != nil {
		t.Fatal(err)
	}
	dc, _ := dispatch.NewClient(e.nc, "default", sandbox.ProviderDocker)
	ctx := sandbox.WithRun(ctxFor(t), "run-a")
	sb, err := dc.Create(ctx, spec(func(s *sandbox.Spec) { s.WorkspaceDir = ws }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dc.Destroy(sandbox.WithRun(context.Background(), "run-a"), sb.Info()) })
	if res, err := sb.Exec(ctx, sandbox.ExecRequest{Command: "echo hi > /workspace/made"}); err != nil || res.ExitCode != 0 {
		t.Fatalf("exec in the allowed sandbox: %+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(ws, "made")); err != nil {
		t.Fatalf("the allowed sandbox does not use its workspace: %v", err)
	}
	// Its Info, altered to name another container or used by another run, is refused.
	info := sb.Info()
	other := "0"
	if info.ID[0] == '0' {
		other = "1" // an ID that starts with 0 would not change
	}
	info.ID = other + info.ID[1:]
	if code, rep := e.send(t, "docker", sandbox.OpExec, dispatch.Request{Run: "run-a", Info: &info, Req: toolReq(t, sandbox.ExecRequest{Command: "true"})}); code != sandbox.CodeForged {
		t.Fatalf("docker Info with another container ID: %+v", rep)
	}
	real := sb.Info()
	if code, rep := e.send(t, "docker", sandbox.OpDestroy, dispatch.Request{Run: "run-b", Info: &real}); code != sandbox.CodeNotYours {
		t.Fatalf("destroy by another run: %+v", rep)
	}
	if n := containers(t, p); n != 1 {
		t.Fatalf("%d containers after a refused destroy, want 1", n)
	}
}

// dockerProvider is the real docker provider, failing the test when the
// engine is unreachable unless POLOS_SKIP_DOCKER=1.
func dockerProvider(t *testing.T) *docker.Provider {
	t.Helper()
	p, err := docker.New(docker.Options{HostID: trustHostID, DefaultImage: images.BusyboxRef})
	if err == nil {
		err = p.Ping(ctxFor(t))
	}
	if err != nil {
		if os.Getenv("POLOS_SKIP_DOCKER") == "1" {
			t.Skipf("POLOS_SKIP_DOCKER=1: %v", err)
		}
		t.Fatalf("the Docker engine is unreachable (%v); start it, or set POLOS_SKIP_DOCKER=1", err)
	}
	if err := images.EnsureBusybox(ctxFor(t), p.Client(), images.BusyboxRef); err != nil {
		t.Fatal(err)
	}
	sweep := func() { _, _ = p.Sweep(context.Background(), func(string) bool { return false }) }
	sweep()
	t.Cleanup(sweep)
	return p
}

// containers counts the containers of this test's host id.
func containers(t *testing.T, p *docker.Provider) int {
	t.Helper()
	list, err := p.Client().ContainerList(ctxFor(t), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", docker.LabelHost+"="+trustHostID))})
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// TestShareHandsASandboxToAnotherRun: the owner shares its sandbox with a
// child run; the child uses it but cannot destroy it, and nobody else can
// use either Info.
func TestShareHandsASandboxToAnotherRun(t *testing.T) {
	e := newTrustEnv(t, dispatch.Policy{})
	parent := e.create(t, "flow")
	pctx := sandbox.WithRun(ctxFor(t), "flow")
	if _, err := e.client.Share(sandbox.WithRun(ctxFor(t), "child"), parent.Info(), "child"); !perr.Has(err, sandbox.CodeNotYours) {
		t.Fatalf("a run shared itself another run's sandbox: %v", err)
	}
	shared, err := sandbox.Share(pctx, e.client, parent.Info(), "child")
	if err != nil {
		t.Fatal(err)
	}
	if shared.Owner != "child" || shared.SharedBy != "flow" || shared.ID != parent.Info().ID || shared.Seal == parent.Info().Seal {
		t.Fatalf("shared Info %+v", shared)
	}
	cctx := sandbox.WithRun(ctxFor(t), "child")
	sb, err := e.client.Open(cctx, shared, sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Write(cctx, sandbox.WriteRequest{Path: "from-child", Content: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(parent.Info().Workspace, "from-child")); err != nil {
		t.Fatalf("the child's write is not in the shared workspace: %v", err)
	}
	if err := e.client.Destroy(cctx, shared); !perr.Has(err, sandbox.CodeNotYours) {
		t.Fatalf("the child destroyed the shared sandbox: %v", err)
	}
	if _, err := e.client.Open(sandbox.WithRun(ctxFor(t), "other"), shared, sandbox.Spec{}); !perr.Has(err, sandbox.CodeNotYours) {
		t.Fatalf("another run used the shared Info: %v", err)
	}
	if _, err := e.client.Open(cctx, parent.Info(), sandbox.Spec{}); !perr.Has(err, sandbox.CodeNotYours) {
		t.Fatalf("the child used the parent's own Info: %v", err)
	}
	if err := e.client.Destroy(pctx, parent.Info()); err != nil {
		t.Fatalf("the owner's destroy: %v", err)
	}
}

// TestHostKey: the key file is made once (mode 0600), every host on the
// data dir reads the same key (even when they start together), and a key
// file others may read is refused.
func TestHostKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data", dispatch.KeyFile)
	keys := make([]dispatch.Key, 8)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() { defer wg.Done(); keys[i], errs[i] = dispatch.LoadOrCreateKey(path) }()
	}
	wg.Wait()
	for i := range keys {
		if errs[i] != nil || keys[i].ID() != keys[0].ID() {
			t.Fatalf("host %d: key %s, %v; host 0 has %s", i, keys[i].ID(), errs[i], keys[0].ID())
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v; want mode 0600", fi.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "data", ".sandbox-host.key-*")); len(left) != 0 {
		t.Errorf("temporary key files left: %v", left)
	}
	again, err := dispatch.LoadOrCreateKey(path)
	if err != nil || again.ID() != keys[0].ID() {
		t.Fatalf("reload gave %s, %v", again.ID(), err)
	}

	// A sandbox sealed by a host on this data dir is served by another.
	srv := testutil.StartServer(t)
	root := resolved(t, t.TempDir())
	o := dispatch.HostOptions{Key: keys[0], Policy: dispatch.Policy{WorkspaceRoots: []string{root}}}
	ncA := srv.ConnectAs(t, "sandbox")
	hostA, err := dispatch.NewHost(ncA, o, local.New())
	if err != nil {
		t.Fatal(err)
	}
	c, _ := dispatch.NewClient(srv.NC, "", sandbox.ProviderLocal)
	ctx := sandbox.WithRun(ctxFor(t), "run-1")
	sb, err := c.Create(ctx, sandbox.Spec{WorkspaceDir: filepath.Join(root, "ws")})
	if err != nil {
		t.Fatal(err)
	}
	hostA.Close()
	if err := ncA.Flush(); err != nil { // the server has dropped host A's subscriptions
		t.Fatal(err)
	}
	ncA.Close()
	o.Key = again
	hostB, err := dispatch.NewHost(srv.NC, o, local.New())
	if err != nil {
		t.Fatal(err)
	}
	defer hostB.Close()
	if _, err := sb.Exec(ctx, sandbox.ExecRequest{Command: "true"}); err != nil {
		t.Fatalf("host B refused host A's sandbox: %v", err)
	}
	if hostB.Served() != 1 {
		t.Fatalf("host B served %d requests, want 1", hostB.Served())
	}

	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
	}{
		{"readable by others", "", 0o644},
		{"writable by the group", "", 0o620},
		{"not hex", "not a key\n", 0o600},
		{"too short", "00ff\n", 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), dispatch.KeyFile)
			content := tc.content
			if content == "" {
				content = strings.Repeat("ab", dispatch.KeyBytes) + "\n"
			}
			if err := os.WriteFile(p, []byte(content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			if _, err := dispatch.LoadOrCreateKey(p); !perr.Has(err, dispatch.CodeHostKey) {
				t.Fatalf("key file %s accepted: %v", tc.name, err)
			}
		})
	}
	if _, err := dispatch.NewHost(srv.NC, dispatch.HostOptions{}, local.New()); !perr.Has(err, dispatch.CodeHostKey) {
		t.Fatalf("a host without a key started: %v", err)
	}
}
