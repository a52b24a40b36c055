// Package testutil holds test helpers shared by Polos packages: polling with
// a deadline instead of sleeping, and a real embedded NATS server.
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
	f, err := creds.Load(os.Getenv(EnvChildCreds))
	if err != nil {
		return nil, err
	}
	return nats.Connect(url, append(f.NATSOptions(), opts...)...)
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

// EnvChildServerDir, set in a child test process, makes RunChildServer
// serve an embedded server on that data directory.
const EnvChildServerDir = "POLOS_TEST_CHILD_SERVER_DIR"

// childServerURLFile is where a child server writes its client URL.
const childServerURLFile = "child-server.url"

// RunChildServer, called first in a package's TestMain, turns the test
// binary into a NATS server process when its parent asked for one
// (StartChildServer): it serves an embedded server (fsync on, a loopback
// listener on a random port) on EnvChildServerDir until it is killed, and
// does not return. Without the variable it returns at once.
func RunChildServer() {
	if node := os.Getenv(EnvChildClusterNode); node != "" {
		runClusterNode(node)
	}
	dir := os.Getenv(EnvChildServerDir)
	if dir == "" {
		return
	}
	s, err := embed.Start(embed.Options{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child server:", err)
		os.Exit(1)
	}
	tmp := filepath.Join(dir, childServerURLFile+".tmp")
	if err := os.WriteFile(tmp, []byte(s.ClientURL()), 0o600); err != nil || os.Rename(tmp, filepath.Join(dir, childServerURLFile)) != nil {
		fmt.Fprintln(os.Stderr, "child server: cannot write its URL:", err)
		os.Exit(1)
	}
	select {}
}

// ChildServer is a NATS server in a child process (a real process a test
// can stop with SIGSTOP or kill with SIGKILL).
type ChildServer struct {
	Cmd *exec.Cmd
	Dir string
	URL string
}

// StartChildServer starts the test binary as a server process on a fresh
// data directory (the package's TestMain must call RunChildServer), waits
// for its URL, and kills it at cleanup.
func StartChildServer(t testing.TB) *ChildServer {
	t.Helper()
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), EnvChildServerDir+"="+dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &ChildServer{Cmd: cmd, Dir: dir}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		b, err := os.ReadFile(filepath.Join(dir, childServerURLFile))
		c.URL = string(b)
		return err
	})
	return c
}

// Connect dials the child server as identity name (a role) of namespace
// "default" and closes the connection at cleanup.
func (c *ChildServer) Connect(t testing.TB, name string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	f, err := creds.Load(filepath.Join(c.Dir, creds.DirName, protocol.DefaultNamespace, name+creds.SeedExt))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.URL, append(append(f.NATSOptions(), nats.MaxReconnects(-1)), opts...)...)
	if err != nil {
		t.Fatalf("connect to the child server as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	return nc
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

// EnvChildClusterNode, set in a child test process, makes RunChildServer
// serve one node of a test cluster: "name dir clientPort clusterPort
// route,route,...".
const EnvChildClusterNode = "POLOS_TEST_CHILD_CLUSTER_NODE"

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

// StartChildCluster starts n cluster nodes, each the test binary in its
// own process (the package's TestMain must call RunChildServer), so a
// test can kill -9 a stream leader. It returns them once every node
// accepts connections; they are killed at cleanup.
func StartChildCluster(t testing.TB, n int) []*ChildServer {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	free := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	ports, cports := make([]int, n), make([]int, n)
	var routes []string
	for i := range ports {
		ports[i], cports[i] = free(), free()
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cports[i]))
	}
	var out []*ChildServer
	for i := range ports {
		dir := t.TempDir()
		cmd := exec.Command(self, "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=n%d %s %d %d %s", EnvChildClusterNode, i+1, dir, ports[i], cports[i], strings.Join(routes, ",")))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		out = append(out, &ChildServer{Cmd: cmd, Dir: dir, URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[i])})
	}
	for _, c := range out {
		CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
			conn, err := net.DialTimeout("tcp", strings.TrimPrefix(c.URL, "nats://"), time.Second)
			if err == nil {
				conn.Close()
			}
			return err
		})
	}
	return out
}
