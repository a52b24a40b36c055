package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/creds"
	"github.com/polos-run/polos/embed"
	"github.com/polos-run/polos/protocol"
)

// Environment of a test binary started as a server process (see
// ServeIfChild).
const (
	EnvServerChildDir    = "POLOS_TEST_SERVER_DIR"
	EnvServerChildListen = "POLOS_TEST_SERVER_LISTEN"
)

// ServeIfChild, called first thing in a TestMain, turns the test binary
// into a server process when StartServerProcess started it: it runs the
// embedded server on the directory and address it was given until killed,
// and never returns. Otherwise it returns at once.
func ServeIfChild() {
	dir := os.Getenv(EnvServerChildDir)
	if dir == "" {
		return
	}
	s, err := embed.Start(embed.Options{DataDir: dir, Listen: os.Getenv(EnvServerChildListen)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "server process:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Shutdown()
	os.Exit(0)
}

// ServerProcess is an embedded nats-server in a child process (the test
// binary itself, through ServeIfChild), so that tests can stop it with
// SIGSTOP, kill it with SIGKILL and restart it on the same store and port,
// while the test's own connections reconnect as real clients do.
type ServerProcess struct {
	t    testing.TB
	Dir  string
	Addr string // host:port, the same across restarts
	cmd  *exec.Cmd
}

// StartServerProcess starts a server process on a fresh directory and a
// free port, provisions namespace "default", and kills it at cleanup.
// The test binary's TestMain must call ServeIfChild.
func StartServerProcess(t testing.TB) *ServerProcess {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &ServerProcess{t: t, Dir: t.TempDir(), Addr: addr}
	p.Restart()
	t.Cleanup(p.Kill)
	nc := p.Connect(t, "server")
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := protocol.Provision(ctx, js, "default", 1); err != nil {
		t.Fatal(err)
	}
	return p
}

// URL is the client URL.
func (p *ServerProcess) URL() string { return "nats://" + p.Addr }

// Restart starts the process (again) and waits until it accepts
// connections.
func (p *ServerProcess) Restart() {
	p.t.Helper()
	self, err := os.Executable()
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), EnvServerChildDir+"="+p.Dir, EnvServerChildListen+"="+p.Addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd = cmd
	CheckFor(p.t, 30*time.Second, 20*time.Millisecond, func() error {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// Pause stops the process with SIGSTOP: connections stay open, nothing is
// answered. Resume continues it.
func (p *ServerProcess) Pause()  { _ = p.cmd.Process.Signal(syscall.SIGSTOP) }
func (p *ServerProcess) Resume() { _ = p.cmd.Process.Signal(syscall.SIGCONT) }

// Kill kills the process with SIGKILL and waits for it; safe to call twice.
func (p *ServerProcess) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// CredsFile is the seed file of identity name of namespace "default".
func (p *ServerProcess) CredsFile(name string) string {
	return filepath.Join(p.Dir, creds.DirName, protocol.DefaultNamespace, name+creds.SeedExt)
}

// ChildEnv lets a child process connect as identity name (ConnectChild).
func (p *ServerProcess) ChildEnv(name string) string { return EnvChildCreds + "=" + p.CredsFile(name) }

// Connect dials the process as identity name, reconnecting as polosd's own
// connections do (protocol.ServiceConnOptions), and closes the connection at cleanup.
func (p *ServerProcess) Connect(t testing.TB, name string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	f, err := creds.Load(p.CredsFile(name))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(p.URL(), append(append(f.NATSOptions(), protocol.ServiceConnOptions()...), opts...)...)
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}
