package embed_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/polos-run/polos/creds"
	"github.com/polos-run/polos/embed"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
)

// violations collects the server's asynchronous permission errors of a
// connection.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
}

func (v *violations) saw(subject string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		if strings.Contains(e, "Permissions Violation") && strings.Contains(e, subject) {
			return true
		}
	}
	return false
}

// TestNoCredentialsNoConnection: the embedded server refuses clients
// without credentials, and with credentials it did not issue.
func TestNoCredentialsNoConnection(t *testing.T) {
	s := testutil.StartServer(t)
	if nc, err := nats.Connect(s.ClientURL(), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a client without credentials was accepted")
	} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("want an authorization error, got %v", err)
	}
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(s.ClientURL(), nats.Timeout(2*time.Second), nats.Nkey(pub, kp.Sign))
	if err == nil {
		nc.Close()
		t.Fatal("a client with a key polosd did not issue was accepted")
	}
}

// TestRolePermissions drives each role's identity over TCP against what
// its role may and may not do.
func TestRolePermissions(t *testing.T) {
	s := testutil.StartServer(t)
	ctx := context.Background()
	runSubj := protocol.RunSubject("default", "run_x", "resumed")
	type probe struct {
		name  string
		allow bool
		do    func(t *testing.T, nc *nats.Conn, js jetstream.JetStream) error
		subj  string // the subject a denial names
	}
	publish := func(subj string) func(*testing.T, *nats.Conn, jetstream.JetStream) error {
		return func(_ *testing.T, nc *nats.Conn, _ jetstream.JetStream) error {
			if err := nc.Publish(subj, []byte("x")); err != nil {
				return err
			}
			return nc.Flush()
		}
	}
	subscribe := func(subj string) func(*testing.T, *nats.Conn, jetstream.JetStream) error {
		return func(_ *testing.T, nc *nats.Conn, _ jetstream.JetStream) error {
			sub, err := nc.SubscribeSync(subj)
			if err != nil {
				return err
			}
			defer sub.Unsubscribe()
			return nc.Flush()
		}
	}
	streamInfo := func(name string) func(*testing.T, *nats.Conn, jetstream.JetStream) error {
		return func(_ *testing.T, _ *nats.Conn, js jetstream.JetStream) error {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := js.Stream(cctx, name)
			return err
		}
	}
	consumer := func(stream string) func(*testing.T, *nats.Conn, jetstream.JetStream) error {
		return func(_ *testing.T, _ *nats.Conn, js jetstream.JetStream) error {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := js.OrderedConsumer(cctx, stream, jetstream.OrderedConsumerConfig{})
			return err
		}
	}
	deleteStream := func(name string) func(*testing.T, *nats.Conn, jetstream.JetStream) error {
		return func(_ *testing.T, _ *nats.Conn, js jetstream.JetStream) error {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			return js.DeleteStream(cctx, name)
		}
	}
	kvPut := func(bucket string) func(*testing.T, *nats.Conn, jetstream.JetStream) error {
		return func(_ *testing.T, _ *nats.Conn, js jetstream.JetStream) error {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := js.Publish(cctx, protocol.KVSubject(bucket, "default.k"), []byte("v"))
			return err
		}
	}
	ctl := func(identity string) string { return protocol.ControlSubject("default", identity, "resume") }
	cases := map[protocol.Role][]probe{
		protocol.RoleExecutor: {
			{name: "append to a run subject", allow: true, do: publish(runSubj)},
			{name: "queue a task", allow: true, do: publish(protocol.TaskSubject("default", "q"))},
			{name: "put a lease", allow: true, do: kvPut(protocol.LeasesKV)},
			{name: "read runs with a consumer", allow: true, do: consumer(protocol.RunsStreamName(0))},
			{name: "delete a run stream", do: deleteStream(protocol.RunsStreamName(0)), subj: "$JS.API.STREAM.DELETE"},
			{name: "send a control request", do: publish(ctl("executor")), subj: ctl("executor")},
			{name: "read every reply inbox", do: subscribe("_INBOX.>"), subj: "_INBOX.>"},
		},
		protocol.RoleSandbox: {
			{name: "serve sandbox requests", allow: true, do: subscribe(protocol.SandboxFilter("default"))},
			{name: "append to a run subject", do: publish(runSubj), subj: runSubj},
			{name: "queue a task", do: publish(protocol.TaskSubject("default", "q")), subj: protocol.TaskSubject("default", "q")},
			{name: "read a stream", do: streamInfo(protocol.RunsStreamName(0)), subj: "$JS.API.STREAM.INFO"},
			{name: "send a sandbox request", do: publish(protocol.SandboxSubject("default", "local", "exec")), subj: protocol.SandboxSubject("default", "local", "exec")},
		},
		protocol.RoleOperator: {
			{name: "read a run stream", allow: true, do: streamInfo(protocol.RunsStreamName(0))},
			{name: "read the run index", allow: true, do: streamInfo(protocol.KVStream(protocol.RunsKV))},
			{name: "follow run subjects", allow: true, do: subscribe(protocol.RunsFilter("default"))},
			{name: "send a control request as itself", allow: true, do: publish(ctl("operator"))},
			{name: "send a control request as another", do: publish(ctl("alice")), subj: ctl("alice")},
			{name: "append to a run subject", do: publish(runSubj), subj: runSubj},
			{name: "queue a task", do: publish(protocol.TaskSubject("default", "q")), subj: protocol.TaskSubject("default", "q")},
			{name: "write a grant", do: kvPut(protocol.GrantsKV), subj: "$KV." + protocol.GrantsKV},
			{name: "create a consumer", do: consumer(protocol.RunsStreamName(0)), subj: "$JS.API.CONSUMER.CREATE"},
			{name: "read the task stream", do: streamInfo(protocol.TasksStream), subj: "$JS.API.STREAM.INFO." + protocol.TasksStream},
			{name: "send a sandbox request", do: publish(protocol.SandboxSubject("default", "local", "exec")), subj: protocol.SandboxSubject("default", "local", "exec")},
			{name: "read every reply inbox", do: subscribe("_INBOX.>"), subj: "_INBOX.>"},
			{name: "read the executors' replies", do: subscribe(protocol.InboxPrefix(protocol.RoleExecutor) + ".>"), subj: protocol.InboxPrefix(protocol.RoleExecutor)},
		},
		protocol.RoleObserver: {
			{name: "read a run stream", allow: true, do: streamInfo(protocol.RunsStreamName(0))},
			{name: "follow run subjects", allow: true, do: subscribe(protocol.RunsFilter("default"))},
			{name: "send a control request", do: publish(ctl("observer")), subj: ctl("observer")},
			{name: "append to a run subject", do: publish(runSubj), subj: runSubj},
			{name: "read the run index", allow: true, do: streamInfo(protocol.KVStream(protocol.RunsKV))},
			{name: "read the grants", do: streamInfo(protocol.KVStream(protocol.GrantsKV)), subj: "$JS.API.STREAM.INFO"},
		},
	}
	for role, probes := range cases {
		for _, p := range probes {
			t.Run(string(role)+"/"+p.name, func(t *testing.T) {
				var v violations
				nc := s.ConnectAs(t, string(role), nats.ErrorHandler(v.handler))
				js, _ := jetstream.New(nc)
				err := p.do(t, nc, js)
				if p.allow {
					if err != nil {
						t.Fatalf("%s may %s, got %v", role, p.name, err)
					}
					_ = nc.Flush()
					if v.saw("") {
						t.Fatalf("%s may %s, but the server reported %v", role, p.name, v.errs)
					}
					return
				}
				testutil.CheckFor(t, 3*time.Second, 20*time.Millisecond, func() error {
					if v.saw(p.subj) {
						return nil
					}
					return errors.New("no permission violation for " + p.subj + " yet")
				})
			})
		}
	}
}

// TestNamespacesAreAccounts: an identity of one namespace sees nothing of
// another, not even its streams.
func TestNamespacesAreAccounts(t *testing.T) {
	dir := t.TempDir()
	srv, err := embed.Start(embed.Options{DataDir: dir, Listen: "127.0.0.1:0", Namespaces: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ns := range srv.Namespaces() {
		nc, err := srv.ConnectAs(ns, string(protocol.RoleServer))
		if err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		if ns == "a" {
			if err := protocol.Provision(ctx, js, ns, 1); err != nil {
				t.Fatal(err)
			}
		}
		_, err = js.Stream(ctx, protocol.RunsStreamName(0))
		if ns == "a" && err != nil {
			t.Fatalf("namespace a: %v", err)
		}
		if ns == "b" && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("namespace b sees a's streams: %v", err)
		}
		nc.Close()
	}
	f, err := creds.Load(srv.Creds().File("b", "operator"))
	if err != nil || f.Namespace != "b" || f.Role != protocol.RoleOperator {
		t.Fatalf("operator of b: %+v %v", f, err)
	}
}
