package tracing_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/tracing"
	"github.com/polos-run/polos/tracing/otlptest"
)

type rig struct {
	srv *testutil.Server
	cl  *client.Client
	st  *events.Store
	rec *otlptest.Receiver
}

func newRig(t *testing.T) *rig {
	rec := otlptest.Start(t)
	srv := testutil.StartServer(t)
	reg := polos.NewRegistry()
	polos.Register(reg, "leaf", func(ctx polos.Context, n int) (int, error) {
		return polos.Step(ctx, "double", func(context.Context, string) (int, error) { return 2 * n, nil })
	})
	polos.Register(reg, "traced", func(ctx polos.Context, _ struct{}) (int, error) {
		a, err := polos.Step(ctx, "first", func(context.Context, string) (int, error) { return 20, nil })
		if err != nil {
			return 0, err
		}
		if err := ctx.Sleep(5 * time.Millisecond); err != nil {
			return 0, err
		}
		if _, err := polos.Suspend[json.RawMessage](ctx, "approve", map[string]string{"q": "go on?"}); err != nil {
			return 0, err
		}
		b, err := polos.InvokeAndWait[int](ctx, "leaf", 1)
		return a + b, err
	})
	ex, err := executor.New(srv.NC, srv.JS, reg, executor.Options{ID: "exec-trace"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ex.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cl, err := client.New(srv.NC, "default")
	if err != nil {
		t.Fatal(err)
	}
	st, err := events.NewStore(srv.NC, srv.JS, "default", "tracer")
	if err != nil {
		t.Fatal(err)
	}
	return &rig{srv: srv, cl: cl, st: st, rec: rec}
}

// follow runs a follower exporting over OTLP until the returned stop is
// called (which flushes the exporter).
func (r *rig) follow(t *testing.T) (stop func()) {
	if !tracing.Enabled() {
		t.Fatal("OTEL_EXPORTER_OTLP_ENDPOINT is set: tracing must be enabled")
	}
	x, err := tracing.NewOTLPExporter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f := tracing.NewFollower(r.st, x, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Run(ctx) }()
	// The consumers exist once Run provisioned them.
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for p := 0; p < protocol.RunPartitions; p++ {
			if _, err := r.srv.JS.Consumer(ctx, protocol.RunsStreamName(p), protocol.TelemetryConsumer("default", p)); err != nil {
				return err
			}
		}
		return nil
	})
	return func() {
		cancel()
		<-done
		if err := x.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}
}

// expected derives, with the pure core, every span the runs' histories
// end: the set a collector must receive, each exactly once.
func (r *rig) expected(t *testing.T, runs ...string) map[string]tracing.Span {
	want := map[string]tracing.Span{}
	for _, id := range runs {
		hist, err := r.st.Load(context.Background(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range tracing.HistorySpans("default", hist, nil) {
			want[s.ID.String()] = s
		}
	}
	return want
}

// TestSpansExactlyOnceAcrossAFollowerRestart: a run with a step, a sleep,
// an approval and a child yields each span once over OTLP, with the
// child's spans in the parent's trace, although the follower was stopped
// while the run waited and a new one finished the job.
func TestSpansExactlyOnceAcrossAFollowerRestart(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	stop := r.follow(t)
	id, _, err := r.cl.Start(ctx, "traced", struct{}{}, client.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		s, err := r.cl.Status(ctx, id)
		if err != nil || s.Status != events.StatusWaiting || len(s.Waiting) != 1 || s.Waiting[0].StepKey != "approve" {
			return fmt.Errorf("status %q %+v %v, want waiting for approve", s.Status, s.Waiting, err)
		}
		return nil
	})
	stop() // the follower goes away while the run waits

	if _, err := r.cl.Resume(ctx, id, "approve", client.Decision{Data: json.RawMessage(`{"approved":true}`), DecidedBy: "alice"}); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if s, err := r.cl.Result(rctx, id); err != nil || s.Status != events.StatusCompleted {
		t.Fatalf("run %s: %q %v", id, s.Status, err)
	}
	stop = r.follow(t) // a new follower reads what the old one did not ack
	hist, _ := r.st.Load(ctx, id, 0)
	var child string
	for _, ev := range hist {
		if ev.Type == events.ChildStarted {
			child = ev.Key
		}
	}
	want := r.expected(t, id, child)
	testutil.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if got := len(r.rec.ByID()); got < len(want) {
			var have []string
			for _, s := range r.rec.ByID() {
				have = append(have, s[0].Name)
			}
			return fmt.Errorf("%d of %d spans received: %q", got, len(want), have)
		}
		return nil
	})
	stop()

	got := r.rec.ByID()
	var names []string
	for sid, w := range want {
		spans := got[sid]
		if len(spans) != 1 {
			t.Errorf("span %s (%s): received %d times, want once", w.Name, sid, len(spans))
			continue
		}
		names = append(names, w.Name)
		s := spans[0]
		if hex.EncodeToString(s.TraceId) != w.TraceID.String() {
			t.Errorf("span %s: trace %x, want %s", w.Name, s.TraceId, w.TraceID)
		}
		if w.Parent.IsValid() && hex.EncodeToString(s.ParentSpanId) != w.Parent.String() {
			t.Errorf("span %s: parent %x, want %s", w.Name, s.ParentSpanId, w.Parent)
		}
	}
	if len(got) != len(want) {
		t.Errorf("received %d distinct spans, want %d", len(got), len(want))
	}
	sort.Strings(names)
	wantNames := []string{"approval approve", "child leaf", "run leaf", "run traced", "sleep", "step double", "step first"}
	if fmt.Sprint(names) != fmt.Sprint(wantNames) {
		t.Errorf("spans %q, want %q", names, wantNames)
	}
	if tracing.TraceIDOf("default", child) == tracing.TraceIDOf("default", id) {
		t.Fatal("distinct roots must have distinct traces")
	}
	for _, s := range got {
		if hex.EncodeToString(s[0].TraceId) != tracing.TraceIDOf("default", id).String() {
			t.Errorf("span %s is not in the parent's trace", s[0].Name)
		}
	}
	for _, s := range got[tracing.SpanIDOf("default", id, "wait/suspend/approve").String()] {
		attrs := otlptest.Attrs(s)
		if attrs["polos.decided_by"] != "alice" || attrs["polos.approved"] != true {
			t.Errorf("approval span attributes %v", attrs)
		}
	}
}
