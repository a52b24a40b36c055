// Package metrics serves Prometheus metrics of a Polos namespace.
//
// Two sources, no third: what happened comes from the spans the telemetry
// follower derives from the run histories (package tracing: counters and
// histograms of finished runs, steps, model calls, tool calls, policy
// decisions, approvals and rate-limit waits), and what is true now is read
// at scrape time from JetStream (runs by status from the run index, steps
// waiting and their age, task queues, stream storage), cached for
// DefaultStateTTL so that scrapers cannot load the store.
//
// Under failure: a state read that fails (the broker stopped) is logged
// and its gauges keep their last values, with polos_state_read_errors_total
// counting; counters restart from zero when polosd restarts (Prometheus
// rate() handles that). With several polosd server processes sharing a
// namespace, each counts the events its follower received: sum them.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"

	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/tracing"
)

// Defaults.
const (
	// DefaultStateTTL is how long a scrape-time read of the store's state
	// is reused.
	DefaultStateTTL = 5 * time.Second
	// DefaultStateTimeout bounds one read of the store's state.
	DefaultStateTimeout = 10 * time.Second
)

// Label values are bounded: workflow and model names come from the
// configuration and the providers, tool names from the tool table; an
// unusually long one is cut.
const maxLabel = 64

// Metrics is the registry of one namespace's metrics. It is a
// tracing.Sink: feed it the spans of a tracing.Follower.
type Metrics struct {
	reg *prometheus.Registry

	runs       *prometheus.CounterVec
	steps      *prometheus.HistogramVec
	tokens     *prometheus.CounterVec
	cost       *prometheus.CounterVec
	tools      *prometheus.CounterVec
	decisions  *prometheus.CounterVec
	approvals  *prometheus.HistogramVec
	rateWaits  *prometheus.HistogramVec
	readErrors prometheus.Counter
	state      *stateCollector
}

// Options configure New.
type Options struct {
	JS        jetstream.JetStream
	Reader    *protocol.DirectReader // reads the run index
	Namespace string
	Logger    *slog.Logger
	// Now is the clock of ages (default time.Now).
	Now func() time.Time
}

// New registers every metric (and the Go runtime and process collectors).
func New(o Options) *Metrics {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Metrics{reg: prometheus.NewRegistry()}
	ns := prometheus.Labels{"namespace": o.Namespace}
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "polos", Name: name, Help: help, ConstLabels: ns}
	}
	h := func(name, help string, buckets []float64) prometheus.HistogramOpts {
		return prometheus.HistogramOpts{Namespace: "polos", Name: name, Help: help, ConstLabels: ns, Buckets: buckets}
	}
	latency := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	waits := []float64{1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600}
	m.runs = prometheus.NewCounterVec(prometheus.CounterOpts(f("runs_finished_total", "Runs that finished, by workflow and final status (completed, failed, cancelled).")), []string{"workflow", "status"})
	m.steps = prometheus.NewHistogramVec(h("step_duration_seconds", "Duration of each step attempt, by workflow, kind (llm, tool, policy, sandbox, rate_limit, step) and outcome (ok, error, uncertain).", latency), []string{"workflow", "kind", "outcome"})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts(f("llm_tokens_total", "Model tokens by agent, model and type (input, output, cache_read, cache_write).")), []string{"workflow", "model", "type"})
	m.cost = prometheus.NewCounterVec(prometheus.CounterOpts(f("llm_cost_usd_total", "Model cost in US dollars by agent and model, as the agent recorded it.")), []string{"workflow", "model"})
	m.tools = prometheus.NewCounterVec(prometheus.CounterOpts(f("tool_calls_total", "Tool calls by agent, tool and outcome (ok, error).")), []string{"workflow", "tool", "outcome"})
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts(f("policy_decisions_total", "Policy decisions by agent, tool and decision (allow, ask, deny).")), []string{"workflow", "tool", "decision"})
	m.approvals = prometheus.NewHistogramVec(h("approval_wait_seconds", "Time steps waited for a person (approvals, questions, budget decisions), by workflow.", waits), []string{"workflow"})
	m.rateWaits = prometheus.NewHistogramVec(h("rate_limit_wait_seconds", "Time model calls waited for a rate limit, by agent.", latency), []string{"workflow"})
	m.readErrors = prometheus.NewCounter(prometheus.CounterOpts(f("state_read_errors_total", "Scrape-time reads of the store's state that failed (the gauges then keep their last values).")))
	m.state = newStateCollector(o, m.readErrors)
	m.reg.MustRegister(m.runs, m.steps, m.tokens, m.cost, m.tools, m.decisions, m.approvals, m.rateWaits, m.readErrors, m.state,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text (or OpenMetrics)
// format. Mount it behind the API's authentication.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, EnableOpenMetrics: true})
}

// Registry is the underlying registry (for tests and embedding).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Flush implements tracing.Sink (metrics are in memory: nothing to do).
func (m *Metrics) Flush(context.Context) error { return nil }

// Export implements tracing.Sink: one span, counted by what it covers.
func (m *Metrics) Export(s tracing.Span) {
	a := attrs(s.Attrs)
	wf := label(a["polos.workflow"].AsString())
	d := s.End.Sub(s.Start).Seconds()
	outcome := "ok"
	if s.Err != "" {
		outcome = "error"
		if strings.HasPrefix(s.Err, "outcome uncertain") {
			outcome = "uncertain"
		}
	}
	switch kind, arg, _ := strings.Cut(s.Name, " "); kind {
	case "run":
		m.runs.WithLabelValues(wf, a["polos.status"].AsString()).Inc()
	case "chat":
		model := label(arg)
		m.steps.WithLabelValues(wf, "llm", outcome).Observe(d)
		for typ, key := range map[string]string{"input": "gen_ai.usage.input_tokens", "output": "gen_ai.usage.output_tokens",
			"cache_read": "gen_ai.usage.cache_read.input_tokens", "cache_write": "gen_ai.usage.cache_creation.input_tokens"} {
			if n := a[attribute.Key(key)].AsInt64(); n > 0 {
				m.tokens.WithLabelValues(wf, model, typ).Add(float64(n))
			}
		}
		if c := a["polos.cost_usd"].AsFloat64(); c > 0 {
			m.cost.WithLabelValues(wf, model).Add(c)
		}
	case "execute_tool":
		m.steps.WithLabelValues(wf, "tool", outcome).Observe(d)
		m.tools.WithLabelValues(wf, label(arg), outcome).Inc()
	case "policy":
		m.steps.WithLabelValues(wf, "policy", outcome).Observe(d)
		m.decisions.WithLabelValues(wf, label(arg), a["polos.policy.decision"].AsString()).Inc()
	case "sandbox":
		m.steps.WithLabelValues(wf, "sandbox", outcome).Observe(d)
	case "rate_limit":
		m.steps.WithLabelValues(wf, "rate_limit", outcome).Observe(d)
		m.rateWaits.WithLabelValues(wf).Observe(float64(a["polos.rate_limit.wait_ms"].AsInt64()) / 1000)
	case "approval":
		m.approvals.WithLabelValues(wf).Observe(d)
	case "step":
		m.steps.WithLabelValues(wf, "step", outcome).Observe(d)
	}
}

func attrs(kv []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(kv))
	for _, a := range kv {
		m[a.Key] = a.Value
	}
	return m
}

func label(s string) string {
	if len(s) > maxLabel {
		return s[:maxLabel]
	}
	return s
}

// stateCollector reads what is true now at scrape time.
type stateCollector struct {
	o      Options
	errors prometheus.Counter

	runs, waiting, oldestWait, queueDepth, oldestTask, streamBytes, streamMsgs *prometheus.Desc

	mu     sync.Mutex
	at     time.Time
	cached []prometheus.Metric
}

func newStateCollector(o Options, errors prometheus.Counter) *stateCollector {
	ns := prometheus.Labels{"namespace": o.Namespace}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("polos_"+name, help, labels, ns)
	}
	return &stateCollector{o: o, errors: errors,
		runs:        d("runs", "Runs by status now, from the run index.", "status"),
		waiting:     d("waiting_steps", "Steps waiting now, by kind (suspend: a person decides; sleep, event, child, operator: parked).", "kind"),
		oldestWait:  d("waiting_oldest_seconds", "Age of the oldest run waiting, by the kind of its first waiting step.", "kind"),
		queueDepth:  d("task_queue_depth", "Tasks stored and not yet done, by queue.", "queue"),
		oldestTask:  d("task_oldest_seconds", "Age of the oldest task of any queue (0 when none waits)."),
		streamBytes: d("jetstream_stream_bytes", "Bytes stored by each Polos stream.", "stream"),
		streamMsgs:  d("jetstream_stream_messages", "Messages stored by each Polos stream.", "stream"),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.runs, c.waiting, c.oldestWait, c.queueDepth, c.oldestTask, c.streamBytes, c.streamMsgs} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.o.Now(); c.cached == nil || now.Sub(c.at) >= DefaultStateTTL {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultStateTimeout)
		ms, err := c.read(ctx, now)
		cancel()
		if err != nil {
			c.errors.Inc()
			c.o.Logger.Warn("metrics: cannot read the store's state; serving the last values", "err", err)
		} else {
			c.cached, c.at = ms, now
		}
	}
	for _, m := range c.cached {
		ch <- m
	}
}

func (c *stateCollector) read(ctx context.Context, now time.Time) ([]prometheus.Metric, error) {
	var out []prometheus.Metric
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	entries, err := index.ReadAll(ctx, c.o.Reader, c.o.Namespace)
	if err != nil {
		return nil, err
	}
	byStatus, waiting, oldest := map[string]int{}, map[string]int{}, map[string]time.Time{}
	for _, e := range entries {
		if e.Err != nil {
			byStatus["unreadable"]++
			continue
		}
		byStatus[e.Sum.Status]++
		for i, w := range e.Sum.Waiting {
			waiting[w.Kind]++
			if o, ok := oldest[w.Kind]; i == 0 && (!ok || e.Sum.UpdatedAt.Before(o)) {
				oldest[w.Kind] = e.Sum.UpdatedAt
			}
		}
	}
	for s, n := range byStatus {
		gauge(c.runs, float64(n), s)
	}
	for k, n := range waiting {
		gauge(c.waiting, float64(n), k)
	}
	for k, at := range oldest {
		gauge(c.oldestWait, max(0, now.Sub(at).Seconds()), k)
	}
	tasks, err := c.o.JS.Stream(ctx, protocol.TasksStream)
	if err != nil {
		return nil, err
	}
	info, err := tasks.Info(ctx, jetstream.WithSubjectFilter(protocol.TasksFilter(c.o.Namespace)))
	if err != nil {
		return nil, err
	}
	for subj, n := range info.State.Subjects {
		gauge(c.queueDepth, float64(n), protocol.QueueOfTaskSubject(subj))
	}
	age := 0.0
	if info.State.Msgs > 0 {
		age = max(0, now.Sub(info.State.FirstTime).Seconds())
	}
	gauge(c.oldestTask, age)
	for _, name := range protocol.AllStreams() {
		s, err := c.o.JS.Stream(ctx, name)
		if err != nil {
			continue // not provisioned (yet) in this account
		}
		st := s.CachedInfo().State
		gauge(c.streamBytes, float64(st.Bytes), name)
		gauge(c.streamMsgs, float64(st.Msgs), name)
	}
	return out, nil
}
