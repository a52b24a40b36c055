package events_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
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
	first := &events.Event{Type: events.RunStarted}
	_, err = st.Append(ctx, "stalled", events.Tip{}, first)
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
	got, err := st.Append(ctx, "stalled", events.TipOfEvent(first), ev)
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

// TestGroupCommitWaitsOutABrokerStall: with group commit on, appends in
// flight during a 5 s SIGSTOP all land, each exactly once, through both
// paths of the committer: an atomic batch whose commit gets no answer
// (then every append of it on the single path, under the same retry
// policy) and single appends. Four appends with a 1 s deadline hold the
// committer's in-flight slots first, so that the others queue up and are
// stored as one batch while the server is still stopped; those four stop
// at their deadline.
func TestGroupCommitWaitsOutABrokerStall(t *testing.T) {
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
	st.EnableGroupCommit()
	var runs, blockers []string // runs of partition 0 (one batch); others
	for i := 0; len(runs) < 8 || len(blockers) < 4; i++ {
		id := fmt.Sprintf("g%d", i)
		switch {
		case protocol.RunPartition(id) == 0 && len(runs) < 8:
			runs = append(runs, id)
		case protocol.RunPartition(id) != 0 && len(blockers) < 4:
			blockers = append(blockers, id)
		}
	}
	seqs := map[string]events.Tip{}
	for _, id := range append(append([]string{}, runs...), blockers...) {
		first := &events.Event{Type: events.RunStarted}
		if _, err = st.Append(ctx, id, events.Tip{}, first); err != nil {
			t.Fatal(err)
		}
		seqs[id] = events.TipOfEvent(first)
	}
	if err := srv.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !srv.Stopped() {
			return fmt.Errorf("server process not stopped yet")
		}
		return nil
	})
	stopped := time.Now()
	go func() {
		time.Sleep(5 * time.Second)
		_ = srv.Cmd.Process.Signal(syscall.SIGCONT)
	}()
	step := func(id string) *events.Event {
		return &events.Event{Type: events.StepCompleted, Pos: 1, Name: "pay", Data: []byte(fmt.Sprintf("%q", id))}
	}
	var wg sync.WaitGroup
	blockErrs := make([]error, len(blockers))
	blockTook := make([]time.Duration, len(blockers))
	for i, id := range blockers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			t0 := time.Now()
			_, blockErrs[i] = st.Append(bctx, id, seqs[id], step(id))
			blockTook[i] = time.Since(t0)
		}()
	}
	time.Sleep(200 * time.Millisecond) // the blockers hold the in-flight slots
	evs := make([]*events.Event, len(runs))
	errs := make([]error, len(runs))
	for i, id := range runs {
		evs[i] = step(id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = st.Append(ctx, id, seqs[id], evs[i])
		}()
	}
	wg.Wait()
	took := time.Since(stopped)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("run %s: append during the stall: %v", runs[i], err)
		}
	}
	for i, err := range blockErrs {
		if perr.CodeOf(err) != protocol.CodeStoreIO || blockTook[i] > 5*time.Second {
			t.Fatalf("append with a 1 s deadline during the stall: %v after %s, want STORE_UNAVAILABLE at its deadline", err, blockTook[i])
		}
	}
	g := st.GroupStats()
	if took < 5*time.Second || g.Fallbacks == 0 {
		t.Fatalf("appends returned after %s, group stats %+v: the stall did not hit a batch", took, g)
	}
	for i, id := range runs {
		hist, err := st.Load(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != 2 || hist[1].Digest != evs[i].Digest {
			t.Fatalf("run %s after the stall: %d events, want run_started and one step_completed", id, len(hist))
		}
	}
	for _, id := range blockers { // gave up, but may have landed: never twice
		hist, err := st.Load(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) > 2 {
			t.Fatalf("run %s: %d events after a cancelled append", id, len(hist))
		}
	}
	t.Logf("%d appends waited out a 5 s SIGSTOP in %s: %d failed attempts, group stats %+v; 4 with a 1 s deadline stopped after %v",
		len(runs), took.Round(time.Millisecond), st.AppendRetries(), g, blockTook)
}
