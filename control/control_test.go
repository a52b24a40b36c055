package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/control"
	"github.com/polos-run/polos/creds"
	"github.com/polos-run/polos/embed"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// env is an embedded server with one extra operator identity ("alice"),
// an executor running a workflow that waits for a decision, and the
// control service.
type env struct {
	srv    *embed.Server
	direct *client.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := creds.Open(filepath.Join(dir, creds.DirName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Add("default", "alice", protocol.RoleOperator); err != nil {
		t.Fatal(err)
	}
	srv, err := embed.Start(embed.Options{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := protocol.Provision(ctx, js, "default", 1); err != nil {
		t.Fatal(err)
	}
	reg := polos.NewRegistry()
	polos.Register(reg, "ask", func(ctx polos.Context, in string) (string, error) {
		d, err := polos.Suspend[struct{ Approved bool }](ctx, "confirm", map[string]any{"_form": map[string]any{"title": "ok?"}})
		if err != nil {
			return "", err
		}
		if d.Approved {
			return "yes", nil
		}
		return "no", nil
	})
	ex, err := executor.New(nc, js, reg, executor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ectx, ecancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ex.Run(ectx); close(done) }()
	t.Cleanup(func() { ecancel(); <-done })
	direct, _ := client.New(nc, "default")
	svc, err := control.Serve(control.Options{Client: direct})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return &env{srv: srv, direct: direct}
}

// operator connects over TCP as identity name, as the CLI does.
func (e *env) operator(t *testing.T, name string, opts ...nats.Option) *client.Client {
	t.Helper()
	f, err := creds.Load(e.srv.Creds().File("default", name))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.Connect(e.srv.ClientURL(), "default", append(f.NATSOptions(), opts...), client.AsOperator(f.Name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func (e *env) waiting(t *testing.T, cl *client.Client, id string) {
	t.Helper()
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		s, err := cl.Status(context.Background(), id)
		if err != nil || s.Status != events.StatusWaiting {
			return errors.New("not waiting yet")
		}
		return nil
	})
}

func decidedBy(t *testing.T, cl *client.Client, id string) string {
	t.Helper()
	hist, err := cl.History(context.Background(), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range hist {
		if ev.Type == events.Resumed {
			return ev.Attr("decided_by")
		}
	}
	return ""
}

// TestDecisionsRecordTheVerifiedIdentity: a decision through the control
// service records the identity the server authenticated, whatever the
// client claims.
func TestDecisionsRecordTheVerifiedIdentity(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, name := range []string{"operator", "alice"} {
		t.Run(name, func(t *testing.T) {
			cl := e.operator(t, name)
			who, err := cl.WhoAmI(ctx)
			if err != nil || who.DecidedBy != "operator:"+name {
				t.Fatalf("whoami: %+v %v", who, err)
			}
			id, created, err := cl.Start(ctx, "ask", "hi", client.StartOptions{})
			if err != nil || !created {
				t.Fatalf("start: %v", err)
			}
			e.waiting(t, cl, id)
			if _, err := cl.Resume(ctx, id, "confirm", client.Decision{Data: json.RawMessage(`{"approved":true}`), DecidedBy: "human:root"}); err != nil {
				t.Fatal(err)
			}
			if got := decidedBy(t, cl, id); got != "operator:"+name {
				t.Fatalf("decided_by %q, want operator:%s", got, name)
			}
			s, err := cl.Result(ctx, id)
			if err != nil || string(s.Result) != `"yes"` {
				t.Fatalf("result %s %v", s.Result, err)
			}
		})
	}
}

// TestForgedRequestsAreRefused: a request naming another identity never
// reaches the service (the server refuses the publish), a request with a
// decided_by field is a coded error, and unknown operations say which exist.
func TestForgedRequestsAreRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id, _, err := e.direct.Start(ctx, "ask", "hi", client.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.waiting(t, e.direct, id)

	var violated = make(chan error, 8)
	alice := e.operator(t, "alice", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violated <- err }))
	forged, _ := json.Marshal(protocol.ResumeRequest{RunID: id, StepKey: "confirm", Data: json.RawMessage(`{"approved":true}`)})
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err = alice.Conn().RequestWithContext(cctx, protocol.ControlSubject("default", "operator", protocol.CtlResume), forged)
	cancel()
	if err == nil {
		t.Fatal("alice's request as operator was answered")
	}
	select {
	case v := <-violated:
		if !strings.Contains(v.Error(), "Permissions Violation") {
			t.Fatalf("want a permissions violation, got %v", v)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the server did not refuse alice publishing as operator")
	}

	body := []byte(`{"run_id":"` + id + `","step_key":"confirm","data":{"approved":true},"decided_by":"human:root"}`)
	msg, err := alice.Conn().Request(protocol.ControlSubject("default", "alice", protocol.CtlResume), body, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var reply protocol.ControlReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.Error == nil || reply.Error.Code != string(client.CodeBadInput) {
		t.Fatalf("a request with decided_by: %s", msg.Data)
	}
	if err := alice.Control(ctx, "delete_everything", struct{}{}, nil); perr.CodeOf(err) != client.CodeBadInput || !strings.Contains(err.Error(), "resume") {
		t.Fatalf("unknown op: %v", err)
	}
	if got := decidedBy(t, e.direct, id); got != "" {
		t.Fatalf("a forged request decided the step (%s)", got)
	}
}

// TestAGivenUpCallerStrandsNothing: the requester gives up right after
// sending its decision; the service still records it and wakes the run.
func TestAGivenUpCallerStrandsNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cl := e.operator(t, "operator")
	for i := 0; i < 10; i++ {
		id, _, err := cl.Start(ctx, "ask", "hi", client.StartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e.waiting(t, cl, id)
		body, _ := json.Marshal(protocol.ResumeRequest{RunID: id, StepKey: "confirm", Data: json.RawMessage(`{"approved":true}`)})
		// Publish with a reply subject nobody reads: the caller is gone.
		if err := cl.Conn().PublishRequest(protocol.ControlSubject("default", "operator", protocol.CtlResume), protocol.InboxPrefix(protocol.RoleOperator)+".gone", body); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s, err := cl.Result(rctx, id)
		cancel()
		if err != nil || s.Status != events.StatusCompleted {
			t.Fatalf("run %d: %s %v", i, s.Status, err)
		}
	}
}

// TestNoControlServiceIsNamed: an operator whose polosd runs no control
// service gets a coded error saying so, not a hang.
func TestNoControlServiceIsNamed(t *testing.T) {
	srv := testutil.StartServer(t)
	f, _ := creds.Load(srv.CredsFile("operator"))
	cl, err := client.Connect(srv.ClientURL(), "default", f.NATSOptions(), client.AsOperator("operator"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, _, err = cl.Start(context.Background(), "ask", "hi", client.StartOptions{})
	if perr.CodeOf(err) != client.CodeNoControl {
		t.Fatalf("want %s, got %v", client.CodeNoControl, err)
	}
}
