package executor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
)

// TestTasksThatCannotBeDone: a malformed task and a task for a run with no
// history are terminated; a task for a workflow this executor does not
// serve is handed back with a delay that doubles with each delivery
// (another executor may serve it), logged once, and never terminated.
func TestTasksThatCannotBeDone(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	cons, err := r.srv.JS.Consumer(ctx, protocol.TasksStream, protocol.ExecutorConsumer("default"))
	if err != nil {
		t.Fatal(err)
	}
	settled := func(want executor.Stats) {
		t.Helper()
		testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			got := r.ex.Stats()
			if got.Terminated != want.Terminated || got.Retried != want.Retried || got.Acked != want.Acked {
				return fmt.Errorf("stats %+v, want terminated %d retried %d acked %d", got, want.Terminated, want.Retried, want.Acked)
			}
			return nil
		})
	}

	huge := make([]byte, 200<<10)
	for i := range huge {
		huge[i] = 'x'
	}
	if _, err := r.srv.JS.Publish(ctx, protocol.TaskSubject("default", "q"), huge); err != nil {
		t.Fatal(err)
	}
	settled(executor.Stats{Terminated: 1})
	if n := r.logs.count("dropping malformed task"); n != 1 || r.logs.count("xxxxxxxxxx") > 7 {
		t.Fatalf("one short log line for a malformed task, got %d:\n%.2000s", n, r.logs)
	}

	if err := protocol.Enqueue(ctx, r.srv.JS, "default", "q", "run_nohistory", "start", ""); err != nil {
		t.Fatal(err)
	}
	settled(executor.Stats{Terminated: 2})

	st, err := events.NewStore(r.srv.NC, r.srv.JS, "default", "other-client")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"run_unserved1", "run_unserved2"} {
		if _, err := st.Append(ctx, id, events.Tip{}, &events.Event{Type: events.RunStarted, Attrs: map[string]string{"workflow": "served_elsewhere", "queue": "q"}}); err != nil {
			t.Fatal(err)
		}
		if err := protocol.Enqueue(ctx, r.srv.JS, "default", "q", id, "start", ""); err != nil {
			t.Fatal(err)
		}
	}
	// Nobody serves the workflow: each task is handed back after a delay
	// that doubles from 100 ms (0.1+0.2+0.4+0.8+1.6 s: about 5 deliveries
	// each in the first 3 s), never terminated.
	time.Sleep(3 * time.Second)
	if got := r.ex.Stats(); got.Terminated != 2 || got.Retried < 2 || got.Retried > 2*6 {
		t.Fatalf("stats %+v: want 2 terminated and 2..12 hand-backs of the unserved tasks in 3 s (backing off)", got)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 2 {
		t.Fatalf("the two tasks must wait for another executor, %d pending", info.NumAckPending)
	}
	if n := r.logs.count("workflow=served_elsewhere"); n != 1 {
		t.Fatalf("logged %d times, want once per workflow:\n%s", n, r.logs)
	}
}

// FuzzGarbageParksRun publishes arbitrary bytes on a waiting run's subject:
// every input must end in a damaged run whose task was terminated, never
// in a crash or a retry loop.
func FuzzGarbageParksRun(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("hello"))
	f.Add([]byte{'P', 1})
	f.Add([]byte{'P', 2, 0x81, 0xa2, 'p', 'r', 0xdd, 0x0f, 0xff, 0xff, 0xff})
	good, _ := events.Encode(&events.Event{Type: events.Resumed, RunID: "someone_else", Key: "approve"})
	f.Add(good)
	f.Add(good[:len(good)-1])
	r := newRig(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx := context.Background()
		id, _, err := r.cl.Start(ctx, "wait", nil, client.StartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error { return statusIs(r, id, events.StatusWaiting) })
		if _, err := r.srv.JS.Publish(ctx, protocol.RunSubject("default", id, "resumed"), b); err != nil {
			t.Fatal(err)
		}
		testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error { return statusIs(r, id, events.StatusDamaged) })
		testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
			if r.logs.count("run="+id+" status=damaged") != 1 {
				return fmt.Errorf("run %s not parked by the executor yet", id)
			}
			return nil
		})
	})
}
