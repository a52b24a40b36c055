package protocol_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/internal/perr"
	"github.com/polos-run/polos/internal/testutil"
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
// by a later provision with 3 (each change reported), and back.
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
	provision(1)
	check(1)
}
