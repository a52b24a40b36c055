// Package embed starts an in-process nats-server with JetStream for
// single-machine Polos, and provisions the streams, consumers, KV buckets
// and object store Polos needs on any server (embedded or a cluster).
package embed

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/polos-run/polos/creds"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Defaults of the embedded server.
const (
	DefaultListenHost   = "127.0.0.1"
	DefaultListenPort   = 4222
	DefaultStartTimeout = 10 * time.Second
	// DefaultMaxPayload is the largest message the server accepts. Events
	// larger than events.DefaultBlobThreshold go to the object store, so this
	// only bounds a single encoded event.
	DefaultMaxPayload = 8 << 20
)

// Error codes.
const (
	CodeStart     perr.Code = "EMBED_START"   // the server could not start
	CodeDataDirIn perr.Code = "EMBED_DATADIR" // the data directory is unusable or locked
)

// Options configure the embedded server.
type Options struct {
	// DataDir holds the JetStream file store. Required.
	DataDir string
	// NoSync turns off fsync on every write. Only for benchmarks: with it an
	// acknowledged write can be lost when the machine crashes, because the
	// server's default sync interval is 2 minutes.
	NoSync bool
	// Listen is "host:port" for the client listener. Empty means no network
	// listener (in-process connections only). Port 0 or -1 picks a free port.
	Listen string
	// ServerName names the server (defaults to "polosd").
	ServerName string
	// Logs enables the server's own logging to stderr.
	Logs bool
	// Namespaces get one NATS account each, with one identity per role
	// (package creds); default: just protocol.DefaultNamespace. There is
	// no unauthenticated access: every client needs one of the
	// credentials written under DataDir/creds.
	Namespaces []string
	// Logger gets the store watchdog's reports (a store fault once per
	// code per minute, its recovery); default slog.Default().
	Logger *slog.Logger
	// StoreCheckInterval is how often the store watchdog runs (0:
	// DefaultStoreCheckInterval; negative: no watchdog, a full disk then
	// needs a restart).
	StoreCheckInterval time.Duration
}

// Server is a running embedded nats-server.
type Server struct {
	ns    *server.Server
	opts  Options
	lock  *os.File
	creds *creds.Store
	watch *storeWatch
}

// Start starts the embedded server and waits until it accepts connections.
// It takes an exclusive lock on DataDir: a second Start on the same
// directory fails with CodeDataDirIn naming the process that holds it.
func Start(o Options) (*Server, error) {
	if o.DataDir == "" {
		return nil, perr.New(CodeDataDirIn, "pass a data directory (polosd --data-dir DIR)", "no data directory given")
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, perr.Wrap(err, CodeDataDirIn, "choose a writable --data-dir", "cannot create data directory %s", o.DataDir)
	}
	lock, err := lockDataDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	if len(o.Namespaces) == 0 {
		o.Namespaces = []string{protocol.DefaultNamespace}
	}
	store, err := creds.Open(filepath.Join(o.DataDir, creds.DirName))
	if err != nil {
		lock.Close()
		return nil, err
	}
	ids, err := store.Ensure(o.Namespaces)
	if err != nil {
		lock.Close()
		return nil, err
	}
	sopts := &server.Options{}
	if err := sopts.ProcessConfigString(creds.NATSConfig(ids)); err != nil {
		lock.Close()
		return nil, perr.Wrap(err, CodeStart, "delete the malformed file under "+store.Dir()+" and restart", "cannot configure the server's accounts")
	}
	sopts.ServerName = o.ServerName
	sopts.JetStream = true
	sopts.StoreDir = filepath.Join(o.DataDir, "jetstream")
	sopts.SyncAlways = !o.NoSync
	sopts.MaxPayload = DefaultMaxPayload
	sopts.NoSigs = true
	sopts.DontListen = o.Listen == ""
	sopts.JetStreamMaxMemory = -1
	sopts.JetStreamMaxStore = -1
	if err := migrateGlobalAccount(sopts.StoreDir, o.Namespaces[0]); err != nil {
		lock.Close()
		return nil, err
	}
	if sopts.ServerName == "" {
		sopts.ServerName = "polosd"
	}
	if o.Listen != "" {
		host, portStr, err := net.SplitHostPort(o.Listen)
		if err != nil {
			lock.Close()
			return nil, perr.Wrap(err, CodeStart, "use HOST:PORT, e.g. 127.0.0.1:4222", "bad listen address %q", o.Listen)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			lock.Close()
			return nil, perr.Wrap(err, CodeStart, "use HOST:PORT, e.g. 127.0.0.1:4222", "bad listen port %q", portStr)
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		sopts.Host, sopts.Port = host, port
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		lock.Close()
		return nil, perr.Wrap(err, CodeStart, "check the options and the data directory", "cannot configure the embedded NATS server")
	}
	if o.Logs {
		ns.ConfigureLogger()
	}
	go ns.Start()
	if !ns.ReadyForConnections(DefaultStartTimeout) {
		ns.Shutdown()
		lock.Close()
		return nil, perr.New(CodeStart, "is the port already in use? try --listen 127.0.0.1:0",
			"embedded NATS server not ready after %s", DefaultStartTimeout)
	}
	srv := &Server{ns: ns, opts: o, lock: lock, creds: store}
	if o.StoreCheckInterval >= 0 {
		log := o.Logger
		if log == nil {
			log = slog.Default()
		}
		srv.watch = newStoreWatch(ns, sopts, log, o.StoreCheckInterval)
	}
	return srv, nil
}

// Creds is the store of the identities this server accepts.
func (s *Server) Creds() *creds.Store { return s.creds }

// Namespaces are the namespaces (accounts) the server serves.
func (s *Server) Namespaces() []string { return s.opts.Namespaces }

// ClientURL is the URL other programs use to connect ("" without listener).
func (s *Server) ClientURL() string {
	if s.opts.Listen == "" {
		return ""
	}
	return s.ns.ClientURL()
}

// Connect opens an in-process client connection (no TCP) as the server
// identity of the first namespace: polosd itself.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	return s.ConnectAs(s.opts.Namespaces[0], string(protocol.RoleServer), opts...)
}

// ConnectAs opens an in-process connection as identity name of namespace ns.
func (s *Server) ConnectAs(ns, name string, opts ...nats.Option) (*nats.Conn, error) {
	f, err := creds.Load(s.creds.File(ns, name))
	if err != nil {
		return nil, err
	}
	opts = append(append([]nats.Option{nats.InProcessServer(s.ns), nats.Name("polos-inprocess-" + name), nats.MaxReconnects(-1)}, f.NATSOptions()...), opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, perr.Wrap(err, CodeStart, "", "cannot connect in-process to the embedded server as %s", f.Identity)
	}
	return nc, nil
}

// NATS exposes the underlying server (tests, version reporting).
func (s *Server) NATS() *server.Server { return s.ns }

// Synced reports whether every write is fsynced before it is acknowledged.
func (s *Server) Synced() bool { return !s.opts.NoSync }

// Shutdown stops the server cleanly, flushing the store, and releases the
// data directory lock. Safe to call twice.
func (s *Server) Shutdown() {
	if s.watch != nil {
		s.watch.close()
	}
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	}
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// Version is the nats-server version compiled in.
func Version() string { return server.VERSION }

var errLocked = errors.New("locked")

// globalAccount is where a server without accounts keeps its JetStream data.
const globalAccount = "$G"

// migrateGlobalAccount moves the JetStream data of a data directory written
// before namespaces had accounts of their own (everything in the global
// account) into the account of namespace ns, once, before the server
// starts. Runs of other namespaces in that data stay with ns's account.
func migrateGlobalAccount(storeDir, ns string) error {
	old := filepath.Join(storeDir, "jetstream", globalAccount)
	dst := filepath.Join(storeDir, "jetstream", ns)
	if _, err := os.Stat(old); err != nil {
		return nil
	}
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if err := os.Rename(old, dst); err != nil {
		return perr.Wrap(err, CodeDataDirIn, "move "+old+" to "+dst+" by hand", "cannot move the data of the unauthenticated server into account %s", ns)
	}
	return nil
}

func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "polosd.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, perr.Wrap(err, CodeDataDirIn, "choose a writable --data-dir", "cannot open lock file %s", path)
	}
	if err := flock(f); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		who := string(holder)
		if who == "" {
			who = "another process"
		}
		return nil, perr.New(CodeDataDirIn,
			"stop that process, or start this one with another --data-dir",
			"data directory %s is in use by %s", dir, who)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d", os.Getpid())), 0)
	return f, nil
}
