package protocol_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

func TestProvisionIsIdempotent(t *testing.T) {
	s := testutil.StartServer(t)
	ctx := context.Background()
	before, _ := s.JS.Stream(ctx, protocol.RunsStreamName(0))
	created := before.CachedInfo().Created
	for i := 0; i < 3; i++ {
		if err := protocol.Provision(ctx, s.JS, "default", 1); err != nil {
			t.Fatalf("provision #%d: %v", i+2, err)
		}
	}
	after, _ := s.JS.Stream(ctx, protocol.RunsStreamName(0))
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
	cfg := protocol.StreamConfigs(1)[0]
	cfg.AllowDirect = false
	if _, err := s.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := protocol.Provision(ctx, s.JS, "default", 1); err != nil {
		t.Fatal(err)
	}
	st, _ := s.JS.Stream(ctx, protocol.RunsStreamName(0))
	if !st.CachedInfo().Config.AllowDirect {
		t.Fatal("drift in allow_direct was not repaired")
	}
	// Immutable drift: a memory stream under Polos's name.
	if err := s.JS.DeleteStream(ctx, protocol.EventsStream); err != nil {
		t.Fatal(err)
	}
	var bad jetstream.StreamConfig
	for _, c := range protocol.StreamConfigs(1) {
		if c.Name == protocol.EventsStream {
			bad = c
		}
	}
	bad.Storage = jetstream.MemoryStorage
	if _, err := s.JS.CreateStream(ctx, bad); err != nil {
		t.Fatal(err)
	}
	err := protocol.Provision(ctx, s.JS, "default", 1)
	if perr.CodeOf(err) != protocol.CodeDrift || !strings.Contains(err.Error(), "storage") {
		t.Fatalf("want a drift error naming storage, got %v", err)
	}
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
		want := int(h.Sum32() % protocol.RunPartitions)
		if got := protocol.RunPartition(id); got != want {
			t.Fatalf("RunPartition(%q) = %d, want FNV-1a %% %d = %d", id, got, protocol.RunPartitions, want)
		}
		seen[want]++
	}
	for p := 0; p < protocol.RunPartitions; p++ {
		if seen[p] < 1000/protocol.RunPartitions/2 {
			t.Fatalf("partition %d got %d of 1000 runs: %v", p, seen[p], seen)
		}
	}
	if protocol.RunsStreamName(3) != "POLOS_RUNS_3" {
		t.Fatalf("stream name %s", protocol.RunsStreamName(3))
	}
}
