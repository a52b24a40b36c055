package main_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/tracing"
	"github.com/polos-run/polos/tracing/otlptest"
)

// otelEnv points a polosd at an OTLP receiver through the standard
// OpenTelemetry environment.
func otelEnv(rec *otlptest.Receiver) []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rec.URL(), "OTEL_BSP_SCHEDULE_DELAY=50"}
}

// TestTracesSurviveAPolosdKill9: polosd started with the standard OTLP
// environment exports spans derived from the demo run's history to an
// OTLP receiver, across a kill -9 of polosd mid-step and its restart:
// every span the finished history ends arrives; a span whose message was
// handled but not acknowledged at the kill may arrive twice, always with
// the same id.
func TestTracesSurviveAPolosdKill9(t *testing.T) {
	rec := otlptest.Start(t)
	dataDir := t.TempDir()
	d := startPolosdEnv(t, dataDir, otelEnv(rec))
	id := startDemo(t, d, `{"delay_ms": 1500, "command": "echo traced"}`)
	testutil.CheckFor(t, waitLong, 20*time.Millisecond, func() error {
		for _, e := range history(t, d, id) {
			if e.Name == "llm:1" && e.Type == events.StepStarted {
				return nil
			}
		}
		return fmt.Errorf("llm:1 not started yet")
	})
	d.kill9()
	d = startPolosdEnv(t, dataDir, otelEnv(rec))
	waitStatus(t, d, id, "waiting")
	mustOK(t, polos(t, d, "resume", id, "--approve"))
	mustOK(t, polos(t, d, "result", id, "--timeout", "90s"))
	n, dups := checkTraces(t, rec, history(t, d, id), false)
	t.Logf("%d spans across a polosd kill -9 mid-step, %d received twice", n, dups)

	// The same follower feeds /metrics, behind the API key like pprof.
	key, err := os.ReadFile(d.ready.HTTPKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string, withKey bool) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, d.ready.HTTPURL+path, nil)
		if withKey {
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/metrics", "/debug/pprof/"} {
		if code, _ := get(p, false); code != http.StatusUnauthorized {
			t.Errorf("GET %s without the key: %d, want 401", p, code)
		}
	}
	if code, _ := get("/debug/pprof/", true); code != http.StatusOK {
		t.Errorf("GET /debug/pprof/ with the key: %d", code)
	}
	want := `polos_runs_finished_total{namespace="default",status="completed",workflow="demo"} 1`
	testutil.CheckFor(t, waitLong, 100*time.Millisecond, func() error {
		code, body := get("/metrics", true)
		if code != http.StatusOK || !strings.Contains(body, want) {
			return fmt.Errorf("GET /metrics: %d, no %s in:\n%.3000s", code, want, body)
		}
		return nil
	})
}

// checkTraces waits until every span the history ends was received and
// returns how many there are and how many arrived twice. With agent, the
// model call spans must carry the GenAI attributes.
func checkTraces(t *testing.T, rec *otlptest.Receiver, hist []events.Event, agent bool) (n, dups int) {
	t.Helper()
	want := tracing.HistorySpans("default", hist, nil)
	testutil.CheckFor(t, waitLong, 100*time.Millisecond, func() error {
		got := rec.ByID()
		for _, s := range want {
			if len(got[s.ID.String()]) == 0 {
				return fmt.Errorf("span %q not received yet (%d of %d spans)", s.Name, len(got), len(want))
			}
		}
		return nil
	})
	got := rec.ByID()
	llm := 0
	for _, s := range want {
		dups += len(got[s.ID.String()]) - 1
		if strings.HasPrefix(s.Name, "chat ") {
			llm++
			a := otlptest.Attrs(got[s.ID.String()][0])
			if a["gen_ai.operation.name"] != "chat" || a["gen_ai.request.model"] == "" || a["gen_ai.usage.output_tokens"] == nil {
				t.Errorf("model call span %q lacks GenAI attributes: %v", s.Name, a)
			}
		}
	}
	if agent && llm == 0 {
		t.Fatalf("no model call span among %d", len(want))
	}
	return len(want), dups
}
