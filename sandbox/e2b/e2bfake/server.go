// Package e2bfake is a local stand-in for E2B: one httptest.Server that
// speaks both the control plane (POST/GET/DELETE /sandboxes) and envd
// (process.Process/Start, SendSignal, filesystem.Filesystem/ListDir and
// MakeDir, /files, /health) with the wire bytes recorded from envd 0.6.13
// (see /work/shared/e2b-protocol.md section 6b). Requests carrying the
// E2b-Sandbox-Id header (or a Host of the form 49983-<id>.<domain>) go to
// envd; all others go to the control plane.
//
// Each sandbox is a temporary directory acting as the sandbox's "/", with
// /home/user and /tmp created in it. File endpoints resolve sandbox paths
// the way the kernel would inside a chroot of that directory (".." stops at
// "/", absolute symlink targets start at the sandbox's "/") and open them
// through an os.Root, so nothing reaches outside the directory.
//
// Commands are real processes on this machine, each in its own process
// group. Where user namespaces are available (root, or unprivileged user
// namespaces) and nsenter exists, each sandbox gets one private user and
// mount namespace, held by a sleeping process, in which the sandbox's
// /home/user and /tmp are bind-mounted over the host's; every command joins
// it, so commands and /files see the same files. Elsewhere commands run on
// the host filesystem in the mapped cwd (Namespaces reports which).
//
// Differences from real envd, on purpose: on timeout and on SIGKILL the
// whole process group is killed (real envd kills only the process it
// started; Options.SignalLeaderOnly restores that), and commands run as the
// namespace's root (uid 0 mapped to the test's user), not as "user".
package e2bfake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

// Defaults of the fake.
const (
	DefaultAPIKey        = "e2b_0123456789abcdef0123456789abcdef01234567"
	DefaultEnvdVersion   = "0.6.13"
	DefaultMaxTimeoutSec = 3600 // a Hobby team's limit (1 h)
	apiDefaultTimeoutSec = 15   // what the API uses when "timeout" is omitted
	defaultKeepalive     = 90 * time.Second
	sandboxIDLen         = 20
	homeDir              = "/home/user"
	defaultUser          = "user"
	// waitDelay bounds how long an exited command's output pipes are drained
	// when a background child still holds them (real envd does not wait).
	waitDelay = 500 * time.Millisecond
	// holderStartTimeout bounds the start of a sandbox's namespace holder.
	holderStartTimeout = 30 * time.Second
)

// Options configure the fake. Zero values take the defaults above.
type Options struct {
	APIKey        string // the only key accepted; default DefaultAPIKey
	MaxTimeoutSec int    // sandbox lifetimes above this get 400
	MaxConcurrent int    // running sandboxes beyond this get 429; 0 = no limit
	EnvdVersion   string // reported envdVersion; below 0.5.7 /files refuses octet-stream, below 0.4.0 a user is required
	// Keepalive overrides the interval of keepalive events on Start streams
	// (else the client's Keepalive-Ping-Interval header, else 90 s).
	Keepalive time.Duration
	// SignalLeaderOnly makes timeouts and SendSignal reach only the started
	// process, as real envd does, instead of its whole process group.
	SignalLeaderOnly bool
	// Dir holds the sandbox directories; default a new temporary directory,
	// removed by Close.
	Dir string
}

// Server is a running fake. Its URL serves as both E2B_API_URL and
// E2B_SANDBOX_URL.
type Server struct {
	*httptest.Server
	opts    Options
	dir     string
	ownsDir bool
	ctx     context.Context // cancelled by Close: ends every command
	cancel  context.CancelFunc

	mu              sync.Mutex
	sandboxes       map[string]*fakeSandbox
	rejectCreates   int // next creates answered 429
	truncateStreams int // next Start streams cut before their 0x02 envelope
	starts          int // Start calls served, for tests

	namespaces bool   // sandboxes get private namespaces (set by New)
	nsenter    string // path of nsenter when namespaces is set
}

// New starts a fake; Close it when done.
func New(opts Options) (*Server, error) {
	if opts.APIKey == "" {
		opts.APIKey = DefaultAPIKey
	}
	if opts.MaxTimeoutSec <= 0 {
		opts.MaxTimeoutSec = DefaultMaxTimeoutSec
	}
	if opts.EnvdVersion == "" {
		opts.EnvdVersion = DefaultEnvdVersion
	}
	s := &Server{opts: opts, dir: opts.Dir, sandboxes: map[string]*fakeSandbox{}}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "e2bfake-")
		if err != nil {
			return nil, fmt.Errorf("e2bfake: create the sandboxes directory: %w", err)
		}
		s.dir, s.ownsDir = d, true
	}
	s.probeNamespaces()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.Server = httptest.NewServer(http.HandlerFunc(s.route))
	return s, nil
}

// Close kills every command, stops the server and removes what it created.
func (s *Server) Close() {
	s.cancel()
	s.mu.Lock()
	all := s.sandboxes
	s.sandboxes = map[string]*fakeSandbox{}
	s.mu.Unlock()
	for _, sb := range all {
		sb.destroy()
	}
	s.Server.Close()
	if s.ownsDir {
		os.RemoveAll(s.dir)
	}
}

// APIKey is the key the fake accepts.
func (s *Server) APIKey() string { return s.opts.APIKey }

// SandboxDir returns the host directory acting as the sandbox's "/".
func (s *Server) SandboxDir(id string) (string, bool) {
	sb := s.lookup(id)
	if sb == nil {
		return "", false
	}
	return sb.dir, true
}

// Running returns the IDs of the sandboxes alive now.
func (s *Server) Running() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.sandboxes))
	for id := range s.sandboxes {
		ids = append(ids, id)
	}
	return ids
}

// Vanish makes a sandbox disappear as if it had timed out: its commands are
// killed, envd calls get the proxy's 502 and the control plane 404.
func (s *Server) Vanish(id string) bool {
	s.mu.Lock()
	sb := s.sandboxes[id]
	delete(s.sandboxes, id)
	s.mu.Unlock()
	if sb == nil {
		return false
	}
	sb.destroy()
	return true
}

// RejectCreates makes the next n POST /sandboxes answer 429, as when the
// team's concurrency limit is reached.
func (s *Server) RejectCreates(n int) {
	s.mu.Lock()
	s.rejectCreates = n
	s.mu.Unlock()
}

// TruncateStreams makes the next n Start streams end after their last event
// without the 0x02 end-of-stream envelope, as when a connection is cut.
func (s *Server) TruncateStreams(n int) {
	s.mu.Lock()
	s.truncateStreams = n
	s.mu.Unlock()
}

// Starts is the number of process.Process/Start calls served so far.
func (s *Server) Starts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}

func (s *Server) lookup(id string) *fakeSandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sandboxes[id]
}

// takeOne decrements *n under the lock and reports whether it was positive.
func (s *Server) takeOne(n *int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *n > 0 {
		*n--
		return true
	}
	return false
}

// route sends envd traffic (routing header or 49983-<id>. host) to envd and
// everything else to the control plane.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	id, port := r.Header.Get(wire.HeaderSandboxID), r.Header.Get(wire.HeaderSandboxPort)
	if (id == "") != (port == "") {
		writeAPIError(w, http.StatusBadRequest, "both "+wire.HeaderSandboxID+" and "+wire.HeaderSandboxPort+" headers are required")
		return
	}
	if id == "" {
		id = hostSandboxID(r.Host)
	}
	if id == "" {
		s.serveAPI(w, r)
		return
	}
	sb := s.lookup(id)
	if sb == nil {
		writeJSON(w, http.StatusBadGateway, wire.ProxyNotFound{SandboxID: id, Message: wire.ProxyNotFoundMessage, Code: http.StatusBadGateway})
		return
	}
	s.serveEnvd(sb, w, r)
}

// hostSandboxID parses "49983-<id>.<domain>" out of a Host header.
func hostSandboxID(host string) string {
	prefix := fmt.Sprintf("%d-", wire.EnvdPort)
	if !strings.HasPrefix(host, prefix) {
		return ""
	}
	rest := host[len(prefix):]
	if i := strings.IndexByte(rest, '.'); i > 0 {
		return rest[:i]
	}
	return ""
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", wire.ContentTypeJSON)
	w.WriteHeader(status)
	w.Write(b)
}

// writeAPIError writes the control plane's and envd HTTP's error body.
func writeAPIError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, wire.APIError{Code: status, Message: msg})
}

// writeConnectError writes a unary Connect error (string code).
func writeConnectError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, wire.ConnectError{Code: code, Message: msg})
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func newSandboxID() string {
	b := make([]byte, sandboxIDLen)
	rand.Read(b)
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b)
}

func newToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// mkSandboxDir creates the directory of a new sandbox with /home/user.
func (s *Server) mkSandboxDir(id string) (string, error) {
	dir := filepath.Join(s.dir, id)
	if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(homeDir)), 0o755); err != nil {
		return "", err
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return "", err
	}
	return dir, os.Chmod(tmp, 0o1777)
}

// Namespaces reports whether commands run in private mount namespaces where
// the sandbox's /home/user and /tmp replace the host's (else they run on
// the host filesystem in the mapped cwd).
func (s *Server) Namespaces() bool { return s.namespaces }
