package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/metrics"
	"github.com/polos-run/polos/tracing"
)

// scrape fetches /metrics over HTTP and parses the text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value is the value of the sample of family name whose labels include
// want (a counter, gauge or a histogram's count); -1 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// TestMetricsFromHistoriesAndState: runs driven through a real executor
// show up in /metrics, scraped and parsed as Prometheus text: finished
// runs and step durations from the histories (through the telemetry
// follower), runs by status, waiting steps and their age, task queues and
// stream storage from the store at scrape time.
func TestMetricsFromHistoriesAndState(t *testing.T) {
	srv := testutil.StartServer(t)
	reg := polos.NewRegistry()
	polos.Register(reg, "counted", func(ctx polos.Context, _ struct{}) (string, error) {
		if _, err := polos.Step(ctx, "work", func(context.Context, string) (int, error) { return 1, nil }); err != nil {
			return "", err
		}
		_, err := polos.Suspend[json.RawMessage](ctx, "approve", map[string]string{"q": "ok?"})
		return "done", err
	})
	ex, err := executor.New(srv.NC, srv.JS, reg, executor.Options{ID: "exec-metrics"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = ex.Run(ctx) }()
	st, err := events.NewStore(srv.NC, srv.JS, "default", "telemetry")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	clock := func() time.Time { return now }
	m := metrics.New(metrics.Options{JS: srv.JS, Reader: st.Reader(), Namespace: "default", Now: clock})
	f := tracing.NewFollower(st, m, nil)
	go func() { _ = f.Run(ctx) }()
	web := httptest.NewServer(m.Handler())
	defer web.Close()
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, err := srv.JS.Consumer(ctx, "POLOS_RUNS_3", "polos_telemetry_default_3"); err != nil {
			return err
		}
		_, err := srv.JS.Consumer(ctx, "POLOS_RUNS_0", "polos_telemetry_default_0")
		return err
	})

	cl, err := client.New(srv.NC, "default")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; i < 3; i++ {
		id, _, err := cl.Start(ctx, "counted", nil, client.StartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	waiting := func(id string) error {
		s, err := cl.Status(ctx, id)
		if err != nil || s.Status != events.StatusWaiting {
			return fmt.Errorf("run %s: %q %v", id, s.Status, err)
		}
		return nil
	}
	for _, id := range ids {
		testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return waiting(id) })
	}
	for _, id := range ids[:2] {
		if _, err := cl.Resume(ctx, id, "approve", client.Decision{Data: json.RawMessage(`{"approved":true}`), DecidedBy: "test"}); err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		if s, err := cl.Result(rctx, id); err != nil || s.Status != events.StatusCompleted {
			t.Fatalf("run %s: %q %v", id, s.Status, err)
		}
		rcancel()
	}

	wf := map[string]string{"workflow": "counted"}
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		now = now.Add(metrics.DefaultStateTTL) // a fresh state read at each scrape
		fams := scrape(t, web.URL)
		checks := []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"polos_runs_finished_total", map[string]string{"workflow": "counted", "status": "completed"}, 2},
			{"polos_step_duration_seconds", map[string]string{"workflow": "counted", "kind": "step", "outcome": "ok"}, 3},
			{"polos_approval_wait_seconds", wf, 2},
			{"polos_runs", map[string]string{"status": "completed"}, 2},
			{"polos_runs", map[string]string{"status": "waiting"}, 1},
			{"polos_waiting_steps", map[string]string{"kind": events.WaitApproval}, 1},
		}
		for _, c := range checks {
			if got := value(fams, c.name, c.labels); got != c.want {
				return fmt.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
			}
		}
		if v := value(fams, "polos_jetstream_stream_bytes", map[string]string{"stream": "POLOS_TASKS"}); v < 0 {
			return fmt.Errorf("no storage gauge of POLOS_TASKS")
		}
		if v := value(fams, "polos_task_oldest_seconds", nil); v < 0 {
			return fmt.Errorf("no task age gauge")
		}
		if v := value(fams, "polos_waiting_oldest_seconds", map[string]string{"kind": "suspend"}); v < float64(metrics.DefaultStateTTL/time.Second) {
			return fmt.Errorf("the oldest wait is %vs old, want the clock's advance at least", v)
		}
		return nil
	})
}
