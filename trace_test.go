package polos_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/tracing"
	"github.com/polos-run/polos/tracing/otlptest"
)

// spanCheck follows the runs of a test server with a real tracer that
// exports over OTLP to an in-process receiver; check then asserts that
// every span the histories end was received exactly once.
type spanCheck struct {
	rec  *otlptest.Receiver
	x    *tracing.Exporter
	stop context.CancelFunc
	done chan struct{}
}

func startSpanCheck(t *testing.T, srv *testutil.Server) *spanCheck {
	t.Helper()
	c := &spanCheck{rec: otlptest.Start(t), done: make(chan struct{})}
	x, err := tracing.NewOTLPExporter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st, err := events.NewStore(srv.NC, srv.JS, "default", "tracer")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := protocol.ProvisionTelemetry(ctx, srv.JS, "default"); err != nil {
		t.Fatal(err)
	}
	c.x, c.stop = x, cancel
	go func() { defer close(c.done); _ = tracing.NewFollower(st, x, nil).Run(ctx) }()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

// check waits for every span of hists and fails on any span received
// other than once. It returns the number of spans.
func (c *spanCheck) check(t *testing.T, hists [][]events.Event) int {
	t.Helper()
	want := map[string]string{}
	for _, h := range hists {
		for _, s := range tracing.HistorySpans("default", h, nil) {
			want[s.ID.String()] = s.Name
		}
	}
	testutil.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if err := c.x.Flush(context.Background()); err != nil {
			return err
		}
		if got := len(c.rec.ByID()); got < len(want) {
			return fmt.Errorf("%d of %d spans received", got, len(want))
		}
		return nil
	})
	got := c.rec.ByID()
	for id, name := range want {
		if n := len(got[id]); n != 1 {
			t.Errorf("span %s %q received %d times, want once", id, name, n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("received %d distinct spans, the histories end %d", len(got), len(want))
	}
	return len(want)
}
