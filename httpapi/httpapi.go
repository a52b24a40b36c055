// Package httpapi is polosd's HTTP API: health, runs (list, start, get,
// cancel), a run's events as JSON or server-sent events, and resume.
//
// Every route is a thin layer over package client, so the HTTP API and the
// CLI behave the same. Errors are JSON {"error": {"code","message","fix"}}
// with the status derived from the error code (see Status).
//
// Auth: every route but /healthz needs "Authorization: Bearer <key>": run
// data is the agent's work and a decision steers it, and any local process
// (including a command the agent runs) can reach the listener. polosd
// generates the key at first start (<data-dir>/creds/http.key) unless one
// is given. A decision records who made it from the credential checked
// (DecidedByAPIKey), never from the request body. Handlers added with
// Mount do their own auth (the approval pages use single-use tokens bound
// to one step).
package httpapi

import (
	"github.com/polos-run/polos/hitl"

	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/health"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/replay"
)

// Limits and defaults.
const (
	MaxBodyBytes      = 4 << 20
	DefaultListLimit  = 100
	SSEHeartbeat      = 15 * time.Second // comment line that keeps proxies from closing an idle stream
	CodeUnauthorized  = perr.Code("UNAUTHORIZED")
	CodeBadRequest    = client.CodeBadInput
	codeWorkflowUnknw = replay.CodeWorkflowNotFound
)

// Workflows tells the API which workflow names exist (nil: accept any).
type Workflows interface {
	Lookup(name string) (replay.WorkflowFunc, bool)
	Names() []string
}

// Options configure the API.
type Options struct {
	Client    *client.Client
	Workflows Workflows
	// APIKey is required on every route but /healthz. Empty refuses
	// every request (there is no open mode).
	APIKey string
	// KeyName names the key's holder in decisions: decided_by is
	// "http:<KeyName>" (default DefaultKeyName).
	KeyName string
	Logger  *slog.Logger
	// Health, when set, are the readiness checks /readyz runs (package
	// health); /healthz and /readyz need no key.
	Health []health.Check
	// Role names the polosd role in health answers.
	Role string
}

// DefaultKeyName names the holder of polosd's generated HTTP API key.
const DefaultKeyName = "operator"

// Server is the HTTP API handler.
type Server struct {
	o   Options
	mux *http.ServeMux
}

// New returns the API with its routes registered.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.KeyName == "" {
		o.KeyName = DefaultKeyName
	}
	s := &Server{o: o, mux: http.NewServeMux()}
	if o.Health != nil {
		health.Mount(s.mux.HandleFunc, o.Role, o.Health)
	} else {
		s.mux.HandleFunc("GET /healthz", s.health)
	}
	s.mux.HandleFunc("GET /v1/workflows", s.auth(s.workflows))
	s.mux.HandleFunc("GET /v1/runs", s.auth(s.list))
	s.mux.HandleFunc("POST /v1/runs", s.auth(s.start))
	s.mux.HandleFunc("GET /v1/runs/{id}", s.auth(s.get))
	s.mux.HandleFunc("GET /v1/runs/{id}/events", s.auth(s.events))
	s.mux.HandleFunc("POST /v1/runs/{id}/steps/{key}/resume", s.auth(s.resume))
	s.mux.HandleFunc("POST /v1/runs/{id}/cancel", s.auth(s.cancel))
	return s
}

// Mount adds a handler under pattern (http.ServeMux syntax, e.g.
// "/approve/"). It is how other packages (the approval web UI) extend the
// API; mounted handlers are not behind the API key.
func (s *Server) Mount(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// MountAuth adds a handler under pattern behind the API key, like the
// API's own routes (/metrics, /debug/pprof/).
func (s *Server) MountAuth(pattern string, h http.Handler) {
	s.mux.HandleFunc(pattern, s.auth(h.ServeHTTP))
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || s.o.APIKey == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.o.APIKey)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="polos"`)
			writeErr(w, perr.New(CodeUnauthorized, "send Authorization: Bearer <key>: the key is in <data-dir>/creds/http.key (or the --api-key polosd was started with)", "missing or wrong API key"))
			return
		}
		next(w, r)
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	status, code := "ok", http.StatusOK
	if !s.o.Client.Conn().IsConnected() {
		status, code = "nats disconnected", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"status": status, "namespace": s.o.Client.Namespace()})
}

func (s *Server) workflows(w http.ResponseWriter, r *http.Request) {
	var names []string
	if s.o.Workflows != nil {
		names = s.o.Workflows.Names()
	}
	writeJSON(w, http.StatusOK, map[string]any{"workflows": names})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := client.ListFilter{Status: q.Get("status"), Agent: q.Get("agent"), Limit: DefaultListLimit}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			writeErr(w, perr.New(CodeBadRequest, "pass limit as a non-negative integer", "bad limit %q", l))
			return
		}
		f.Limit = n
	}
	runs, err := s.o.Client.List(r.Context(), f)
	if err != nil {
		writeErr(w, err)
		return
	}
	if runs == nil {
		runs = []events.Summary{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": runs})
}

// StartRequest is the body of POST /v1/runs.
type StartRequest struct {
	Workflow string          `json:"workflow"`
	Input    json.RawMessage `json:"input,omitempty"`
	ID       string          `json:"id,omitempty"`
	Session  string          `json:"session,omitempty"`
}

func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	var req StartRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Workflow == "" {
		writeErr(w, perr.New(CodeBadRequest, `send {"workflow": "<name>", "input": ...}`, "workflow is required"))
		return
	}
	if s.o.Workflows != nil {
		if _, ok := s.o.Workflows.Lookup(req.Workflow); !ok {
			writeErr(w, perr.New(codeWorkflowUnknw, "use one of: "+strings.Join(s.o.Workflows.Names(), ", "), "no workflow or agent named %q", req.Workflow))
			return
		}
	}
	var input any
	if len(req.Input) > 0 {
		input = req.Input
	}
	ctx, cancel := detached(r)
	defer cancel()
	id, created, err := s.o.Client.Start(ctx, req.Workflow, input, client.StartOptions{ID: req.ID, Session: req.Session})
	if err != nil {
		writeErr(w, err)
		return
	}
	code := http.StatusCreated
	if !created {
		code = http.StatusOK
	}
	writeJSON(w, code, map[string]any{"id": id, "created": created})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	sum, err := s.o.Client.Status(r.Context(), r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sum)
}

// ResumeRequest is the body of POST /v1/runs/{id}/steps/{key}/resume.
type ResumeRequest struct {
	Data json.RawMessage `json:"data"`
	// DecidedBy is accepted for compatibility and ignored: the decision
	// records the credential that was checked (DecidedBy).
	DecidedBy string `json:"decided_by,omitempty"`
}

// DecidedBy is what a decision made with the API key records.
func (s *Server) DecidedBy() string { return "http:" + s.o.KeyName }

func (s *Server) resume(w http.ResponseWriter, r *http.Request) {
	var req ResumeRequest
	if !decodeBody(w, r, &req) {
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	sum, err := s.o.Client.Resume(ctx, r.PathValue("id"), r.PathValue("key"), client.Decision{Data: req.Data, DecidedBy: s.DecidedBy(), Validate: hitl.Validate})
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sum)
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx, cancel := detached(r)
	defer cancel()
	if err := s.o.Client.Cancel(ctx, id); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "cancel_requested": true})
}

// events returns the run's events after from_seq: a JSON array, or a live
// server-sent event stream (Accept: text/event-stream) whose event IDs are
// stream sequences, so a reconnect with Last-Event-ID resumes with no gap
// and no duplicate. The stream ends after the run's terminal event.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	from, err := fromSeq(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		hist, err := s.o.Client.History(r.Context(), id, from)
		if err != nil {
			writeErr(w, err)
			return
		}
		if hist == nil {
			hist = []events.Event{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"events": hist})
		return
	}
	if _, err := s.o.Client.History(r.Context(), id, 0); err != nil {
		writeErr(w, err)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeErr(w, perr.New("INTERNAL", "", "streaming unsupported"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fl.Flush()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	evs := make(chan events.Event, 64)
	go func() {
		defer close(evs)
		_ = s.o.Client.Follow(ctx, id, from, func(e events.Event) error {
			select {
			case evs <- e:
				return nil
			case <-ctx.Done():
				return client.ErrStop
			}
		})
	}()
	tick := time.NewTicker(SSEHeartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			fmt.Fprint(w, ": keepalive\n\n")
			fl.Flush()
		case e, ok := <-evs:
			if !ok {
				return
			}
			b, _ := json.Marshal(e)
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, b)
			fl.Flush()
			if e.Type.IsTerminal() {
				return
			}
		}
	}
}

// DefaultWriteTimeout bounds a start, resume or cancel.
const DefaultWriteTimeout = 60 * time.Second

// detached is the context of a write: not ended when the HTTP client gives
// up, so a change the API began (a decision and its run's wake-up) is
// always finished; bounded by DefaultWriteTimeout.
func detached(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), DefaultWriteTimeout)
}

func fromSeq(r *http.Request) (uint64, error) {
	v := r.URL.Query().Get("from_seq")
	if v == "" {
		v = r.Header.Get("Last-Event-ID")
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, perr.New(CodeBadRequest, "pass from_seq (or Last-Event-ID) as a sequence number", "bad sequence %q", v)
	}
	return n, nil
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, perr.Wrap(err, CodeBadRequest, "send a JSON body as docs/cli.md (HTTP API) shows", "cannot decode the request body"))
		return false
	}
	return true
}

// Status maps an error code to an HTTP status.
func Status(err error) int {
	switch perr.CodeOf(err) {
	case events.CodeRunNotFound, replay.CodeWorkflowNotFound:
		return http.StatusNotFound
	case client.CodeStepNotWaiting, client.CodeAlreadyDecided, client.CodeRunFinished, events.CodeRunExists, events.CodeRunDamaged:
		return http.StatusConflict
	case CodeBadRequest, events.CodeBadID:
		return http.StatusBadRequest
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case client.CodeUnreachable, events.CodeStoreIO, protocol.CodeStoreNoQuorum, protocol.CodeStoreReadOnly:
		return http.StatusServiceUnavailable
	case protocol.CodeStoreFull:
		return http.StatusInsufficientStorage
	case client.CodeTimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// ErrorBody is the JSON shape of every error response.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Fix     string `json:"fix,omitempty"`
	} `json:"error"`
}

func writeErr(w http.ResponseWriter, err error) {
	var b ErrorBody
	var pe *perr.Error
	if errors.As(err, &pe) {
		b.Error.Code, b.Error.Fix = string(pe.Code), pe.Fix
		b.Error.Message = pe.Msg
		if pe.Cause != nil {
			b.Error.Message += ": " + pe.Cause.Error()
		}
	} else {
		b.Error.Code, b.Error.Message = "INTERNAL", err.Error()
	}
	writeJSON(w, Status(err), b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}
