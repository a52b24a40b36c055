package polos_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/embed"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/protocol"
)

// TestLongRunReplays50kEvents: a run of 50,000 events still replays (and
// continues). The history is written with fsync off (this measures replay,
// not write durability). The time is logged, not asserted.
func TestLongRunReplays50kEvents(t *testing.T) {
	const steps = 49_998
	srv, err := embed.Start(embed.Options{DataDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, _ := srv.Connect()
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := protocol.Provision(ctx, js, "default", 1); err != nil {
		t.Fatal(err)
	}
	st, _ := events.NewStore(nc, js, "default", "writer")
	in, _ := json.Marshal(steps + 1)
	prev := &events.Event{Type: events.RunStarted, Data: in, Attrs: map[string]string{"workflow": "long", "queue": "long"}}
	_, err = st.Append(ctx, "long", events.Tip{}, prev)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for i := 1; i <= steps; i++ {
		d, _ := json.Marshal(i)
		ev := &events.Event{Type: events.StepCompleted, Pos: i, Name: "s", Attempt: 1, Data: d}
		if _, err = st.Append(ctx, "long", events.TipOfEvent(prev), ev); err != nil {
			t.Fatal(err)
		}
		prev = ev
	}
	t.Logf("wrote %d events in %s", steps+1, time.Since(t0))
	reg := polos.NewRegistry()
	var executed int
	polos.Register(reg, "long", func(ctx polos.Context, n int) (int, error) {
		sum := 0
		for i := 1; i <= n; i++ {
			v, err := polos.Step(ctx, "s", func(context.Context, string) (int, error) { executed++; return i, nil }, polos.Idempotent())
			if err != nil {
				return 0, err
			}
			sum += v
		}
		return sum, nil
	})
	ex, _ := executor.New(nc, js, reg, executor.Options{CacheOff: true})
	t0 = time.Now()
	o, err := ex.Advance(ctx, "long")
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(t0)
	hist, _ := st.Load(ctx, "long", 0)
	if o.Kind.String() != "completed" || executed != 1 || len(hist) != 50_001 {
		t.Fatalf("outcome %s, executed %d new steps, %d events", o.Kind, executed, len(hist))
	}
	t.Logf("read + replayed 50,000 events and ran 1 new step in %s", el)
}
