// Package health answers liveness and readiness over HTTP for every polosd
// role: GET /healthz (the process serves HTTP: always 200) and GET /readyz
// (every check of the role passes: 200, else 503), each with a JSON body
// that lists the checks, and for a failing one its coded error and fix.
// Neither needs the API key: they reveal no run data.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/polos-run/polos/perr"
)

// DefaultCheckTimeout bounds each check of a readiness probe; a check that
// takes longer fails with CodeCheckTimeout.
const DefaultCheckTimeout = 2 * time.Second

// Codes of checks that fail without a code of their own.
const (
	CodeCheckFailed  perr.Code = "NOT_READY"
	CodeCheckTimeout perr.Code = "CHECK_TIMEOUT"
)

// Check is one readiness condition. Run returns nil when it holds; a coded
// error (perr) says why not and how to fix it.
type Check struct {
	Name string
	Run  func(ctx context.Context) error
}

// Result is the outcome of one check.
type Result struct {
	Name  string  `json:"name"`
	OK    bool    `json:"ok"`
	Code  string  `json:"code,omitempty"`
	Error string  `json:"error,omitempty"`
	Fix   string  `json:"fix,omitempty"`
	Ms    float64 `json:"ms"`
}

// Report is a readiness report.
type Report struct {
	Ready  bool     `json:"ready"`
	Role   string   `json:"role"`
	Checks []Result `json:"checks"`
}

// Evaluate runs the checks concurrently, each bounded by
// DefaultCheckTimeout (and ctx), and reports them in order.
func Evaluate(ctx context.Context, role string, checks []Check) Report {
	r := Report{Ready: true, Role: role, Checks: make([]Result, len(checks))}
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Checks[i] = run(ctx, c)
		}()
	}
	wg.Wait()
	for _, c := range r.Checks {
		r.Ready = r.Ready && c.OK
	}
	return r
}

func run(ctx context.Context, c Check) Result {
	ctx, cancel := context.WithTimeout(ctx, DefaultCheckTimeout)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = perr.New(CodeCheckTimeout, "check the NATS server: it did not answer in time", "%s did not answer within %s", c.Name, DefaultCheckTimeout)
	}
	res := Result{Name: c.Name, OK: err == nil, Ms: float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		var pe *perr.Error
		if errors.As(err, &pe) {
			res.Code, res.Error, res.Fix = string(pe.Code), pe.Msg, pe.Fix
		} else {
			res.Code, res.Error = string(CodeCheckFailed), err.Error()
		}
	}
	return res
}

// Handler serves GET /healthz and GET /readyz for role with checks.
func Handler(role string, checks []Check) http.Handler {
	mux := http.NewServeMux()
	Mount(mux.HandleFunc, role, checks)
	return mux
}

// Mount registers /healthz and /readyz with handle (an http.ServeMux's
// HandleFunc), so that an existing API serves them too.
func Mount(handle func(pattern string, h func(http.ResponseWriter, *http.Request)), role string, checks []Check) {
	handle("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		write(w, http.StatusOK, map[string]any{"status": "ok", "role": role})
	})
	handle("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rep := Evaluate(r.Context(), role, checks)
		code := http.StatusOK
		if !rep.Ready {
			code = http.StatusServiceUnavailable
		}
		write(w, code, rep)
	})
}

func write(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
