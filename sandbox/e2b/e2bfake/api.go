package e2bfake

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

// fakeSandbox is one live sandbox: a directory and its running commands.
type fakeSandbox struct {
	id, templateID, token, envdVersion string
	dir                                string
	root                               *os.Root
	envVars                            map[string]string
	metadata                           map[string]string
	startedAt                          time.Time
	ctx                                context.Context // cancelled when the sandbox goes away
	cancel                             context.CancelFunc

	mu    sync.Mutex
	endAt time.Time
	timer *time.Timer
	procs map[uint32]*process

	holder *exec.Cmd // the namespace holder; nil without namespaces
}

func (sb *fakeSandbox) destroy() {
	sb.cancel()
	sb.mu.Lock()
	if sb.timer != nil {
		sb.timer.Stop()
	}
	procs := make([]*process, 0, len(sb.procs))
	for _, p := range sb.procs {
		procs = append(procs, p)
	}
	sb.mu.Unlock()
	for _, p := range procs {
		p.kill(false)
	}
	for _, p := range procs {
		<-p.done
	}
	stopHolder(sb.holder)
	sb.root.Close()
	os.RemoveAll(sb.dir)
}

var (
	sandboxPathRE = regexp.MustCompile(`^/sandboxes/([^/]+)(/timeout)?$`)
	validIDRE     = regexp.MustCompile(`^[a-z0-9]+$`)
)

func notFoundMessage(id string) string {
	return fmt.Sprintf("Sandbox %q doesn't exist or you don't have access to it", id)
}

// serveAPI is the control plane.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(wire.HeaderAPIKey) != s.opts.APIKey {
		writeAPIError(w, http.StatusUnauthorized, "Invalid API key, please visit https://e2b.dev/docs/api-key for more information.")
		return
	}
	if r.URL.Path == wire.PathSandboxes {
		if r.Method != http.MethodPost {
			writeAPIError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		s.createSandbox(w, r)
		return
	}
	m := sandboxPathRE.FindStringSubmatch(r.URL.Path)
	if m == nil {
		writeAPIError(w, http.StatusNotFound, "not found")
		return
	}
	id, sub := m[1], m[2]
	if !validIDRE.MatchString(id) {
		writeAPIError(w, http.StatusBadRequest, "Invalid sandbox ID")
		return
	}
	sb := s.lookup(id)
	switch {
	case sub == "" && r.Method == http.MethodGet:
		if sb == nil {
			writeAPIError(w, http.StatusNotFound, notFoundMessage(id))
			return
		}
		writeJSON(w, http.StatusOK, sb.detail())
	case sub == "" && r.Method == http.MethodDelete:
		if sb == nil || !s.Vanish(id) {
			writeAPIError(w, http.StatusNotFound, notFoundMessage(id))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case sub == "/timeout" && r.Method == http.MethodPost:
		var body struct {
			Timeout *int `json:"timeout"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Timeout == nil {
			writeAPIError(w, http.StatusBadRequest, "request body must be {\"timeout\": <seconds>}")
			return
		}
		if msg := s.checkTimeout(*body.Timeout); msg != "" {
			writeAPIError(w, http.StatusBadRequest, msg)
			return
		}
		if sb == nil {
			writeAPIError(w, http.StatusNotFound, notFoundMessage(id))
			return
		}
		s.armTimer(sb, *body.Timeout)
		w.WriteHeader(http.StatusNoContent)
	default:
		writeAPIError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

func (s *Server) checkTimeout(sec int) string {
	if sec <= 0 {
		return "Timeout must be greater than 0"
	}
	if sec > s.opts.MaxTimeoutSec {
		return fmt.Sprintf("Timeout cannot be greater than %d hours", (s.opts.MaxTimeoutSec+3599)/3600)
	}
	return ""
}

// armTimer makes the sandbox vanish sec seconds from now.
func (s *Server) armTimer(sb *fakeSandbox, sec int) {
	d := time.Duration(sec) * time.Second
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.endAt = time.Now().Add(d)
	if sb.timer != nil {
		sb.timer.Stop()
	}
	sb.timer = time.AfterFunc(d, func() { s.Vanish(sb.id) })
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TemplateID string            `json:"templateID"`
		Timeout    *int              `json:"timeout"`
		Metadata   map[string]string `json:"metadata"`
		EnvVars    map[string]string `json:"envVars"`
		Secure     bool              `json:"secure"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeAPIError(w, http.StatusBadRequest, "invalid request body: "+err.Error())
		return
	}
	if strings.TrimSpace(req.TemplateID) == "" {
		writeAPIError(w, http.StatusBadRequest, "templateID is required")
		return
	}
	timeout := apiDefaultTimeoutSec
	if req.Timeout != nil {
		timeout = *req.Timeout
	}
	if msg := s.checkTimeout(timeout); msg != "" {
		writeAPIError(w, http.StatusBadRequest, msg)
		return
	}
	s.mu.Lock()
	full := s.opts.MaxConcurrent > 0 && len(s.sandboxes) >= s.opts.MaxConcurrent
	s.mu.Unlock()
	if full || s.takeOne(&s.rejectCreates) {
		writeAPIError(w, http.StatusTooManyRequests, fmt.Sprintf("you have reached the maximum number of concurrent E2B sandboxes (%d). If you need more, please contact us at 'https://e2b.dev/docs/getting-help'", s.opts.MaxConcurrent))
		return
	}
	id := newSandboxID()
	dir, err := s.mkSandboxDir(id)
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, "create sandbox: "+err.Error())
		return
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		os.RemoveAll(dir)
		writeAPIError(w, http.StatusInternalServerError, "create sandbox: "+err.Error())
		return
	}
	sb := &fakeSandbox{
		id: id, templateID: req.TemplateID, envdVersion: s.opts.EnvdVersion,
		dir: dir, root: root, envVars: req.EnvVars, metadata: req.Metadata,
		startedAt: time.Now().UTC(), procs: map[uint32]*process{},
	}
	if req.Secure {
		sb.token = newToken()
	}
	if s.namespaces {
		if sb.holder, err = startHolder(sb); err != nil {
			root.Close()
			os.RemoveAll(dir)
			writeAPIError(w, http.StatusInternalServerError, "create sandbox: "+err.Error())
			return
		}
	}
	sb.ctx, sb.cancel = context.WithCancel(s.ctx)
	s.mu.Lock()
	s.sandboxes[id] = sb
	s.mu.Unlock()
	s.armTimer(sb, timeout)
	writeJSON(w, http.StatusCreated, wire.Sandbox{
		TemplateID: req.TemplateID, SandboxID: id, ClientID: wire.ClientID,
		EnvdVersion: sb.envdVersion, EnvdAccessToken: sb.token,
	})
}

func (sb *fakeSandbox) detail() wire.SandboxDetail {
	sb.mu.Lock()
	endAt := sb.endAt
	sb.mu.Unlock()
	return wire.SandboxDetail{
		TemplateID: sb.templateID, SandboxID: sb.id, ClientID: wire.ClientID,
		StartedAt: sb.startedAt.Format(time.RFC3339), EndAt: endAt.UTC().Format(time.RFC3339),
		EnvdVersion: sb.envdVersion, EnvdAccessToken: sb.token,
		CPUCount: 2, MemoryMB: 512, DiskSizeMB: 512, Metadata: sb.metadata, State: "running",
	}
}
