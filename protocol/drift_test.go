package protocol

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestReplicasFor pins the replica decision of provisioning: a configured
// count always wins, whoever created the asset; with none configured an
// existing asset keeps its count and a new one gets DefaultReplicas.
func TestReplicasFor(t *testing.T) {
	for _, tc := range []struct {
		name             string
		configured, have int
		want             int
	}{
		{"new asset, nothing configured", 0, 0, DefaultReplicas},
		{"new asset, 3 configured", 3, 0, 3},
		{"R1 asset, 3 configured: scale up", 3, 1, 3},
		{"R3 asset, 1 configured: scale down", 1, 3, 1},
		{"R3 asset, 5 configured", 5, 3, 5},
		{"R3 asset, nothing configured: kept", 0, 3, 3},
		{"R1 asset, nothing configured: kept", 0, 1, 1},
		{"same count", 3, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ReplicasFor(tc.configured, tc.have); got != tc.want {
				t.Fatalf("ReplicasFor(%d, %d) = %d, want %d", tc.configured, tc.have, got, tc.want)
			}
		})
	}
}

// TestDriftFields: every updatable field Polos relies on, the replica
// count among them, is a drift that names the field and both values; a
// field Polos does not set (description, a user's max_msgs) is none.
func TestDriftFields(t *testing.T) {
	want := StreamConfigs(3)[0]
	for _, tc := range []struct {
		name   string
		change func(c *jetstream.StreamConfig)
		drift  string // "" = no drift
	}{
		{"identical", func(*jetstream.StreamConfig) {}, ""},
		{"replicas 1 of 3", func(c *jetstream.StreamConfig) { c.Replicas = 1 }, "replicas: have 1, want 3"},
		{"replicas 5 of 3", func(c *jetstream.StreamConfig) { c.Replicas = 5 }, "replicas: have 5, want 3"},
		{"direct get off", func(c *jetstream.StreamConfig) { c.AllowDirect = false }, "allow_direct: have false, want true"},
		{"atomic batches off", func(c *jetstream.StreamConfig) { c.AllowAtomicPublish = false }, "allow_atomic: have false, want true"},
		{"subjects", func(c *jetstream.StreamConfig) { c.Subjects = []string{"x.>"} }, "subjects: have [x.>]"},
		{"discard old", func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardOld }, "discard:"},
		{"dedupe window", func(c *jetstream.StreamConfig) { c.Duplicates = time.Second }, "duplicates: have 1s"},
		{"max age", func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour }, "max_age: have 1h0m0s"},
		{"description is not Polos's contract", func(c *jetstream.StreamConfig) { c.Description = "edited" }, ""},
		{"a limit Polos does not set", func(c *jetstream.StreamConfig) { c.MaxMsgs = 10 }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := want
			got.Subjects = append([]string(nil), want.Subjects...)
			tc.change(&got)
			d := driftFields(got, want)
			switch {
			case tc.drift == "" && d != "":
				t.Fatalf("no drift expected, got %s", d)
			case tc.drift != "" && !strings.Contains(d, tc.drift):
				t.Fatalf("drift %q expected, got %q", tc.drift, d)
			}
		})
	}
}
