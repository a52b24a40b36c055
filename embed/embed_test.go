package embed_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/embed"
	"github.com/polos-run/polos/internal/perr"
	"github.com/polos-run/polos/internal/testutil"
)

func TestProvisionIsIdempotent(t *testing.T) {
	s := testutil.StartServer(t)
	ctx := context.Background()
	before, _ := s.JS.Stream(ctx, embed.RunsStreamName(0))
	created := before.CachedInfo().Created
	for i := 0; i < 3; i++ {
		if err := embed.Provision(ctx, s.JS, "default", 1); err != nil {
			t.Fatalf("provision #%d: %v", i+2, err)
		}
	}
	after, _ := s.JS.Stream(ctx, embed.RunsStreamName(0))
	if !after.CachedInfo().Created.Equal(created) {
		t.Fatal("stream was recreated by a second Provision")
	}
	if !s.Synced() {
		t.Fatal("fsync must be on by default")
	}
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("loopback listener expected, got %q", s.ClientURL())
	}
}

func TestProvisionUpdatesDriftAndReportsImmutableDrift(t *testing.T) {
	s := testutil.StartServer(t)
	ctx := context.Background()
	// Updatable drift: someone turned off direct get.
	cfg := embed.StreamConfigs(1)[0]
	cfg.AllowDirect = false
	if _, err := s.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := embed.Provision(ctx, s.JS, "default", 1); err != nil {
		t.Fatal(err)
	}
	st, _ := s.JS.Stream(ctx, embed.RunsStreamName(0))
	if !st.CachedInfo().Config.AllowDirect {
		t.Fatal("drift in allow_direct was not repaired")
	}
	// Immutable drift: a memory stream under Polos's name.
	if err := s.JS.DeleteStream(ctx, embed.EventsStream); err != nil {
		t.Fatal(err)
	}
	var bad jetstream.StreamConfig
	for _, c := range embed.StreamConfigs(1) {
		if c.Name == embed.EventsStream {
			bad = c
		}
	}
	bad.Storage = jetstream.MemoryStorage
	if _, err := s.JS.CreateStream(ctx, bad); err != nil {
		t.Fatal(err)
	}
	err := embed.Provision(ctx, s.JS, "default", 1)
	if perr.CodeOf(err) != embed.CodeDrift || !strings.Contains(err.Error(), "storage") {
		t.Fatalf("want a drift error naming storage, got %v", err)
	}
}

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
	cons, err := s2.JS.Consumer(ctx, embed.TasksStream, embed.ExecutorConsumer("default"))
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

// TestRunPartitionIsTheDocumentedHash pins the partition function: it is
// part of the subject contract (docs/subjects.md), so other programs can
// compute it with any FNV-1a implementation.
func TestRunPartitionIsTheDocumentedHash(t *testing.T) {
	seen := map[int]int{}
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("run_%d", i)
		h := fnv.New32a()
		h.Write([]byte(id))
		want := int(h.Sum32() % embed.RunPartitions)
		if got := embed.RunPartition(id); got != want {
			t.Fatalf("RunPartition(%q) = %d, want FNV-1a %% %d = %d", id, got, embed.RunPartitions, want)
		}
		seen[want]++
	}
	for p := 0; p < embed.RunPartitions; p++ {
		if seen[p] < 1000/embed.RunPartitions/2 {
			t.Fatalf("partition %d got %d of 1000 runs: %v", p, seen[p], seen)
		}
	}
	if embed.RunsStreamName(3) != "POLOS_RUNS_3" {
		t.Fatalf("stream name %s", embed.RunsStreamName(3))
	}
}
