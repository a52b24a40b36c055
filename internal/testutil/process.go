package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/creds"
	"github.com/polos-run/polos/embed"
	"github.com/polos-run/polos/protocol"
)

// Environment of a test binary started as a server process (RunChildServer).
const (
	// EnvChildServerDir and EnvChildServerListen make RunChildServer serve
	// an embedded server (accounts and credentials as polosd's) on that
	// data directory and address.
	EnvChildServerDir    = "POLOS_TEST_CHILD_SERVER_DIR"
	EnvChildServerListen = "POLOS_TEST_CHILD_SERVER_LISTEN"
	// EnvChildClusterNode makes RunChildServer serve one node of a plain
	// JetStream test cluster: "name dir clientPort clusterPort route,route,...".
	EnvChildClusterNode = "POLOS_TEST_CHILD_CLUSTER_NODE"
)

// RunChildServer, called first in a package's TestMain, turns the test
// binary into a NATS server process when its parent asked for one
// (StartChildServer, StartChildCluster): it serves until killed and never
// returns. Without the variables it returns at once.
func RunChildServer() {
	if node := os.Getenv(EnvChildClusterNode); node != "" {
		runClusterNode(node)
	}
	dir := os.Getenv(EnvChildServerDir)
	if dir == "" {
		return
	}
	if _, err := embed.Start(embed.Options{DataDir: dir, Listen: os.Getenv(EnvChildServerListen)}); err != nil {
		fmt.Fprintln(os.Stderr, "child server:", err)
		os.Exit(1)
	}
	select {}
}

// runClusterNode serves a plain JetStream cluster node (no accounts: a
// test cluster) with fsync on every write until killed.
func runClusterNode(spec string) {
	var name, dir, routes string
	var port, cport int
	if _, err := fmt.Sscanf(spec, "%s %s %d %d %s", &name, &dir, &port, &cport, &routes); err != nil {
		fmt.Fprintln(os.Stderr, "cluster node: bad spec:", spec, err)
		os.Exit(1)
	}
	o := &server.Options{ServerName: name, Host: "127.0.0.1", Port: port, NoSigs: true,
		JetStream: true, StoreDir: dir, SyncAlways: true, JetStreamMaxMemory: -1, JetStreamMaxStore: -1,
		Cluster: server.ClusterOpts{Name: "polos-test", Host: "127.0.0.1", Port: cport},
		Routes:  server.RoutesFromStr(routes)}
	s, err := server.NewServer(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster node:", err)
		os.Exit(1)
	}
	s.Start()
	select {}
}

// ChildServer is a NATS server in a child process (the test binary itself,
// through RunChildServer): a real process that a test can stop with
// SIGSTOP, kill with SIGKILL, and restart on the same store and port while
// its clients reconnect as real clients do.
type ChildServer struct {
	Cmd *exec.Cmd
	Dir string
	URL string
	t   testing.TB
	env string // what makes the child this server
	// Cluster marks a node of StartChildCluster: plain JetStream, no
	// accounts, no credentials.
	Cluster bool
}

// StartChildServer starts a server process with polosd's accounts on a
// fresh data directory and a free port, and kills it at cleanup. The
// package's TestMain must call RunChildServer.
func StartChildServer(t testing.TB) *ChildServer {
	t.Helper()
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c := &ChildServer{t: t, Dir: dir, URL: "nats://" + addr,
		env: EnvChildServerDir + "=" + dir + "\x00" + EnvChildServerListen + "=" + addr}
	c.Restart()
	t.Cleanup(c.Kill)
	return c
}

// StartChildServerProvisioned is StartChildServer with namespace "default"
// provisioned.
func StartChildServerProvisioned(t testing.TB) *ChildServer {
	t.Helper()
	c := StartChildServer(t)
	js, _ := jetstream.New(c.Connect(t, string(protocol.RoleServer)))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := protocol.Provision(ctx, js, protocol.DefaultNamespace, 1); err != nil {
		t.Fatal(err)
	}
	return c
}

// StartChildCluster starts n cluster nodes, each in its own process, so a
// test can kill -9 a stream leader. It returns them once every node
// accepts connections; they are killed at cleanup.
func StartChildCluster(t testing.TB, n int) []*ChildServer {
	t.Helper()
	ports, cports := make([]int, n), make([]int, n)
	var routes []string
	for i := range ports {
		ports[i], cports[i] = freePort(t), freePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cports[i]))
	}
	var out []*ChildServer
	for i := range ports {
		dir := t.TempDir()
		c := &ChildServer{t: t, Dir: dir, URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[i]), Cluster: true,
			env: fmt.Sprintf("%s=n%d %s %d %d %s", EnvChildClusterNode, i+1, dir, ports[i], cports[i], strings.Join(routes, ","))}
		c.start()
		t.Cleanup(c.Kill)
		out = append(out, c)
	}
	for _, c := range out {
		c.waitListening()
	}
	return out
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (c *ChildServer) start() {
	self, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), strings.Split(c.env, "\x00")...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.Cmd = cmd
}

func (c *ChildServer) waitListening() {
	addr := strings.TrimPrefix(c.URL, "nats://")
	CheckFor(c.t, 60*time.Second, 20*time.Millisecond, func() error {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// Restart starts the process (again, after Kill) on the same store and
// port and waits until it accepts connections.
func (c *ChildServer) Restart() {
	c.t.Helper()
	c.start()
	c.waitListening()
}

// Pause stops the process with SIGSTOP: connections stay open, nothing is
// answered. Resume continues it.
func (c *ChildServer) Pause()  { _ = c.Cmd.Process.Signal(syscall.SIGSTOP) }
func (c *ChildServer) Resume() { _ = c.Cmd.Process.Signal(syscall.SIGCONT) }

// Kill kills the process with SIGKILL and waits for it; safe to call twice.
func (c *ChildServer) Kill() {
	if c.Cmd == nil || c.Cmd.Process == nil {
		return
	}
	_ = c.Cmd.Process.Signal(syscall.SIGCONT)
	_ = c.Cmd.Process.Kill()
	_ = c.Cmd.Wait()
	c.Cmd = nil
}

// Stopped reports whether the child is stopped (state T in /proc).
func (c *ChildServer) Stopped() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Cmd.Process.Pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'T'
}

// CredsFile is the seed file of identity name of namespace "default"
// ("" on a cluster node: it has no accounts).
func (c *ChildServer) CredsFile(name string) string {
	if c.Cluster {
		return ""
	}
	return filepath.Join(c.Dir, creds.DirName, protocol.DefaultNamespace, name+creds.SeedExt)
}

// ChildEnv lets a child process connect as identity name (ConnectChild).
func (c *ChildServer) ChildEnv(name string) string { return EnvChildCreds + "=" + c.CredsFile(name) }

// Connect dials the server as identity name (a role) of namespace
// "default", reconnecting as polosd's own connections do
// (protocol.ServiceConnOptions), and closes the connection at cleanup.
func (c *ChildServer) Connect(t testing.TB, name string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	base := protocol.ServiceConnOptions()
	if !c.Cluster {
		f, err := creds.Load(c.CredsFile(name))
		if err != nil {
			t.Fatal(err)
		}
		base = append(base, f.NATSOptions()...)
	}
	nc, err := nats.Connect(c.URL, append(base, opts...)...)
	if err != nil {
		t.Fatalf("connect to the child server as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}
