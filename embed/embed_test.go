package embed_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/embed"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

func TestDataDirIsLocked(t *testing.T) {
	s := testutil.StartServer(t)
	_, err := embed.Start(embed.Options{DataDir: s.Dir})
	if perr.CodeOf(err) != embed.CodeDataDirIn || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second start on the same data dir: want %s naming the holder, got %v", embed.CodeDataDirIn, err)
	}
}

// TestScheduledTaskReachesWorkQueue checks the durable-timer mechanism:
// a message scheduled with "@at" on polos.<ns>.sched.* is delivered to the
// task subject at that time, and survives a server restart.
func TestScheduledTaskReachesWorkQueue(t *testing.T) {
	s := testutil.StartServer(t)
	ctx := context.Background()
	at := time.Now().Add(1500 * time.Millisecond).UTC()
	msg := nats.NewMsg("polos.default.sched.run1.t1")
	msg.Header.Set("Nats-Schedule", "@at "+at.Format(time.RFC3339Nano))
	msg.Header.Set("Nats-Schedule-Target", "polos.default.task.default")
	msg.Data = []byte(`{"run_id":"run1"}`)
	if _, err := s.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	// Restart on the same store before it fires.
	dir := s.Dir
	s.Stop()
	s2 := testutil.StartServerIn(t, dir)
	cons, err := s2.JS.Consumer(ctx, protocol.TasksStream, protocol.ExecutorConsumer("default"))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got jetstream.Msg
	for m := range batch.Messages() {
		got = m
	}
	if got == nil {
		t.Fatal("scheduled task was not delivered")
	}
	if time.Now().Before(at) {
		t.Fatalf("delivered before its time")
	}
	if string(got.Data()) != `{"run_id":"run1"}` {
		t.Fatalf("payload %q", got.Data())
	}
	_ = got.Ack()
}
