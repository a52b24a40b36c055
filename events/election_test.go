package events_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// TestAppendWaitsOutALeaderElection: on a 3-node cluster of real server
// processes (R3 streams), the leader of the run's stream is killed with
// SIGKILL right before an append; the append waits out the election,
// retrying, and lands exactly once.
func TestAppendWaitsOutALeaderElection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	srvs := testutil.StartChildCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var nc *nats.Conn
	var js jetstream.JetStream
	testutil.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		var err error
		if nc == nil {
			var urls []string
			for _, s := range srvs {
				urls = append(urls, s.URL)
			}
			if nc, err = nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1)); err != nil {
				return err
			}
			js, _ = jetstream.New(nc)
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return protocol.Provision(pctx, js, "default", 3)
	})
	defer nc.Close()
	st, err := events.NewStore(nc, js, "default", "w")
	if err != nil {
		t.Fatal(err)
	}
	codes := map[perr.Code]int{}
	p := st.Retry()
	p.OnRetry = func(err error, _ time.Duration) { codes[perr.CodeOf(err)]++ }
	st.SetRetry(p)
	const run = "elected"
	first := &events.Event{Type: events.RunStarted}
	_, err = st.Append(ctx, run, events.Tip{}, first)
	if err != nil {
		t.Fatal(err)
	}
	info, err := js.Stream(ctx, st.StreamOf(run))
	if err != nil {
		t.Fatal(err)
	}
	leader := info.CachedInfo().Cluster.Leader
	var victim *testutil.ChildServer
	for i, s := range srvs {
		if fmt.Sprintf("n%d", i+1) == leader {
			victim = s
		}
	}
	if victim == nil {
		t.Fatalf("no server is the leader %q of %s", leader, st.StreamOf(run))
	}
	t0 := time.Now()
	if err := victim.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = victim.Cmd.Wait()
	ev := &events.Event{Type: events.StepCompleted, Pos: 1, Name: "llm", Data: []byte(`"answered"`)}
	got, err := st.Append(ctx, run, events.TipOfEvent(first), ev)
	took := time.Since(t0)
	if err != nil {
		t.Fatalf("append across the election of %s's leader: %v (after %s)", st.StreamOf(run), err, took)
	}
	if st.AppendRetries() == 0 {
		t.Fatalf("append landed after %s without a failed attempt: the leader loss did not hit it", took)
	}
	info, err = js.Stream(ctx, st.StreamOf(run))
	if err != nil {
		t.Fatal(err)
	}
	// Direct gets on a replicated stream may be answered by a follower
	// that has not applied the newest message yet (reads are eventually
	// consistent; appends are compare-and-swap at the leader): poll.
	var hist []events.Event
	testutil.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		var err error
		if hist, err = st.Load(ctx, run, 0); err != nil {
			return err
		}
		if len(hist) != 2 || hist[1].Seq != got || hist[1].Digest != ev.Digest {
			return fmt.Errorf("history after the election: %d events, want run_started and one step_completed", len(hist))
		}
		return nil
	})
	t.Logf("append across the kill -9 of leader %s (new leader %s) landed once after %s, %d failed attempts, retried faults %v",
		leader, info.CachedInfo().Cluster.Leader, took.Round(time.Millisecond), st.AppendRetries(), codes)
}
