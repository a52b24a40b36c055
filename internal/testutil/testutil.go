// Package testutil holds test helpers shared by Polos packages: polling with
// a deadline instead of sleeping, and a real embedded NATS server.
package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/creds"
	"github.com/polos-run/polos/embed"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/dispatch"
)

// CheckFor polls fn every interval until it returns nil or timeout passes,
// then fails the test with fn's last error.
func CheckFor(t testing.TB, timeout, interval time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// Server is a provisioned embedded server for tests.
type Server struct {
	*embed.Server
	Dir string
	NC  *nats.Conn
	JS  jetstream.JetStream
}

// StartServer starts an embedded server with fsync on, a loopback listener on
// a random port, provisions namespace "default", and stops it at cleanup.
func StartServer(t testing.TB) *Server {
	t.Helper()
	return StartServerIn(t, t.TempDir())
}

// StartServerIn is StartServer on a given data directory (to restart on the
// same store).
func StartServerIn(t testing.TB, dir string) *Server {
	t.Helper()
	s, err := embed.Start(embed.Options{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := s.Connect()
	if err != nil {
		s.Shutdown()
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := protocol.Provision(ctx, js, "default", 1); err != nil {
		t.Fatal(err)
	}
	ts := &Server{Server: s, Dir: dir, NC: nc, JS: js}
	t.Cleanup(ts.Stop)
	return ts
}

// Stop closes the client and shuts the server down; safe to call twice.
func (s *Server) Stop() {
	if s.NC != nil {
		s.NC.Close()
	}
	s.Shutdown()
}

// CredsFile is the seed file of identity name (a role name for the
// identities polosd issues) of namespace "default" on s.
func (s *Server) CredsFile(name string) string {
	return s.Creds().File(protocol.DefaultNamespace, name)
}

// ConnectAs dials s over TCP as identity name of namespace "default" (a
// role name: server, executor, sandbox, operator, observer), with its
// credentials and reply-inbox prefix, and closes the connection at cleanup.
func (s *Server) ConnectAs(t testing.TB, name string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	f, err := creds.Load(s.CredsFile(name))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), append(f.NATSOptions(), opts...)...)
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// EnvChildCreds carries the credentials file to a child test process.
const EnvChildCreds = "POLOS_TEST_CREDS"

// ChildEnv is the environment entry that lets a child process started by a
// test connect as identity name (see ConnectChild).
func (s *Server) ChildEnv(name string) string { return EnvChildCreds + "=" + s.CredsFile(name) }

// ConnectChild dials url from a child process with the credentials its
// parent passed in EnvChildCreds.
func ConnectChild(url string, opts ...nats.Option) (*nats.Conn, error) {
	if os.Getenv(EnvChildCreds) == "" { // a test cluster without accounts
		return nats.Connect(url, append(protocol.ServiceConnOptions(), opts...)...)
	}
	f, err := creds.Load(os.Getenv(EnvChildCreds))
	if err != nil {
		return nil, err
	}
	return nats.Connect(url, append(append(f.NATSOptions(), protocol.ServiceConnOptions()...), opts...)...)
}

// SandboxHost serves providers on nc (namespace "default") with a fresh
// host key, allowing workspaces under roots, and closes it at cleanup.
func SandboxHost(t testing.TB, nc *nats.Conn, roots []string, providers ...sandbox.Provider) *dispatch.Host {
	t.Helper()
	key, err := dispatch.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	h, err := dispatch.NewHost(nc, dispatch.HostOptions{Namespace: "default", Key: key, Policy: dispatch.Policy{WorkspaceRoots: roots}}, providers...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// SmallFS mounts a tmpfs of size (e.g. "48m") on a new directory and
// unmounts it at cleanup. It skips the test, saying why, when the test does
// not run as root or the mount fails.
func SmallFS(t testing.TB, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (run the tests as root to check a full disk)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// FillDisk writes a file in dir until its filesystem is full and returns
// the file's path (delete it to free the space).
func FillDisk(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	for _, n := range []int{64 << 10, 4 << 10, 512, 1} { // the last blocks too
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	_ = f.Sync()
	return path
}
