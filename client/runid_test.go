package client

import (
	"testing"
	"time"

	"github.com/polos-run/polos/events"
)

// TestNewRunIDIsUniqueValidAndSortable: many IDs in a tight loop never
// collide (the old lowercased-NUID IDs did), are valid run IDs, and sort by
// creation time across milliseconds.
func TestNewRunIDIsUniqueValidAndSortable(t *testing.T) {
	seen := make(map[string]bool, 200_000)
	for i := 0; i < 200_000; i++ {
		id := NewRunID()
		if seen[id] {
			t.Fatalf("duplicate run ID %s after %d", id, i)
		}
		seen[id] = true
	}
	a := NewRunID()
	if err := events.ValidateID("run ID", a); err != nil || len(a) != len("run_")+26 {
		t.Fatalf("%q: %v", a, err)
	}
	// An ID from a later millisecond sorts after it.
	for next := time.Now().Add(time.Millisecond); time.Now().Before(next); {
	}
	if b := NewRunID(); b <= a {
		t.Fatalf("later ID %s sorts before %s", b, a)
	}
}
