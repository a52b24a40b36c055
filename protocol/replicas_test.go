package protocol_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

func TestMain(m *testing.M) {
	testutil.RunChildServer() // when the test binary is a cluster node
	os.Exit(m.Run())
}

// allAssets lists the streams behind every asset Polos provisions.
func allAssets() []string {
	out := append(protocol.RunsStreams(), protocol.TasksStream, protocol.EventsStream, protocol.ObjectStream(protocol.BlobStore))
	for _, b := range protocol.KVBuckets {
		out = append(out, protocol.KVStream(b))
	}
	return out
}

// TestMoreReplicasThanServersIsACodedError: on one server, asking for 3
// replicas fails at once with the fix, for new and for existing assets.
func TestMoreReplicasThanServersIsACodedError(t *testing.T) {
	s := testutil.StartServer(t) // provisioned with 1 replica
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := protocol.Provision(ctx, s.JS, "default", 3)
	if perr.CodeOf(err) != protocol.CodeDrift || !strings.Contains(err.Error(), "at most the number of JetStream servers") {
		t.Fatalf("want EMBED_CONFIG_DRIFT naming the replica fix, got %v", err)
	}
}

// TestReplicasComeFromConfigWhoeverStartedFirst: on a 3-node cluster of
// real server processes, assets provisioned with 1 replica are scaled to 3
// by a later provision with 3 (each change reported), kept by one with no
// count configured, refused (coded, at once) at 5, and scaled back to 1.
func TestReplicasComeFromConfigWhoeverStartedFirst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	srvs := testutil.StartChildCluster(t, 3)
	var urls []string
	for _, s := range srvs {
		urls = append(urls, s.URL)
	}
	nc, err := nats.Connect(strings.Join(urls, ","), protocol.ServiceConnOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	provision := func(replicas int) map[string]string {
		changed := map[string]string{}
		testutil.CheckFor(t, 90*time.Second, 200*time.Millisecond, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			return protocol.ProvisionWith(ctx, js, "default", protocol.ProvisionOptions{Replicas: replicas,
				OnChange: func(asset, change string) { changed[asset] = change }})
		})
		return changed
	}
	check := func(want int) {
		t.Helper()
		testutil.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
			for _, name := range allAssets() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				s, err := js.Stream(ctx, name)
				cancel()
				if err != nil {
					return err
				}
				if got := s.CachedInfo().Config.Replicas; got != want {
					return perr.New("TEST", "", "%s has %d replicas, want %d", name, got, want)
				}
			}
			return nil
		})
	}
	provision(1)
	check(1)
	changed := provision(3)
	check(3)
	for _, name := range allAssets() {
		if !strings.Contains(changed[name], "3") {
			t.Errorf("scaling %s to 3 replicas was not reported (reports: %v)", name, changed)
		}
	}
	// Nothing configured (a process started without --replicas): the
	// cluster's R3 assets stay R3, nothing is reported.
	if changed := provision(0); len(changed) != 0 {
		t.Errorf("a provision with no replica count configured changed assets: %v", changed)
	}
	check(3)
	// More replicas than the cluster has servers: a coded error with the
	// fix, well within the caller's deadline, and nothing scaled.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	start := time.Now()
	err = protocol.Provision(ctx, js, "default", 5)
	cancel()
	took := time.Since(start)
	t.Logf("5 replicas on 3 servers: %v after %s", err, took)
	if perr.CodeOf(err) != protocol.CodeDrift || !strings.Contains(err.Error(), "at most the number of JetStream servers") {
		t.Fatalf("want EMBED_CONFIG_DRIFT naming the replica fix, got %v", err)
	}
	if took > 20*time.Second {
		t.Fatalf("the refusal took %s: it should not wait for the deadline", took)
	}
	check(3)
	provision(1)
	check(1)
	if changed := provision(0); len(changed) != 0 {
		t.Errorf("a provision with no replica count configured changed assets: %v", changed)
	}
	check(1)
}
