package events_test

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/perr"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
)

func TestMain(m *testing.M) {
	testutil.RunChildServer() // when the test binary is a child server
	os.Exit(m.Run())
}

// TestAppendWaitsOutABrokerStall: the NATS server (a real process) is
// stopped with SIGSTOP for 5 s while an append is in flight; the append
// waits it out, retrying, and lands exactly once.
func TestAppendWaitsOutABrokerStall(t *testing.T) {
	srv := testutil.StartChildServer(t)
	nc := srv.Connect(t, string(protocol.RoleServer))
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := protocol.Provision(ctx, js, "default", 1); err != nil {
		t.Fatal(err)
	}
	st, err := events.NewStore(nc, js, "default", "w")
	if err != nil {
		t.Fatal(err)
	}
	var waits int
	p := st.Retry()
	p.OnRetry = func(error, time.Duration) { waits++ }
	st.SetRetry(p)
	seq, err := st.Append(ctx, "stalled", 0, &events.Event{Type: events.RunStarted})
	if err != nil {
		t.Fatal(err)
	}
	const stall = 5 * time.Second
	if err := srv.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !srv.Stopped() {
			return perr.New("TEST", "", "server process not stopped yet")
		}
		return nil
	})
	stopped := time.Now()
	go func() {
		time.Sleep(stall)
		_ = srv.Cmd.Process.Signal(syscall.SIGCONT)
	}()
	ev := &events.Event{Type: events.StepCompleted, Pos: 1, Name: "pay", Data: []byte(`"paid"`)}
	got, err := st.Append(ctx, "stalled", seq, ev)
	took := time.Since(stopped)
	if err != nil {
		t.Fatalf("append during a %s stall: %v (after %s)", stall, err, took)
	}
	if took < stall {
		t.Fatalf("append returned after %s, before the %s stall ended: the stall did not happen", took, stall)
	}
	if st.AppendRetries() == 0 {
		t.Fatalf("no append attempt failed (%d backoffs): the stall did not hit it", waits)
	}
	hist, err := st.Load(ctx, "stalled", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[1].Seq != got || hist[1].Digest != ev.Digest {
		t.Fatalf("history after the stall: %d events %+v, want run_started and one step_completed at seq %d", len(hist), hist, got)
	}
	t.Logf("append waited out a %s SIGSTOP: returned after %s, %d failed attempts, %d backoffs", stall, took.Round(time.Millisecond), st.AppendRetries(), waits)
}
