package index

import (
	"context"
	"testing"

	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
)

// TestRebuildWritesLoseToNewerWrites: a rebuild's write or delete carries
// the revision the rebuild read; when an executor wrote the entry since,
// the rebuild's write fails, is counted as Raced, and the newer entry stays.
func TestRebuildWritesLoseToNewerWrites(t *testing.T) {
	srv := testutil.StartServer(t)
	ctx := context.Background()
	kv, err := srv.JS.KeyValue(ctx, protocol.RunsKV)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		value  []byte // nil: a delete
		counts func(r Report) int
	}{
		{"write", []byte(`{"id":"run_a","status":"running"}`), func(r Report) int { return r.Written }},
		{"delete", nil, func(r Report) int { return r.Deleted }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := protocol.IndexKey("default", "run_"+tc.name)
			seen, err := kv.Put(ctx, key, []byte("what the rebuild read"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(ctx, key, []byte("newer")); err != nil {
				t.Fatal(err)
			}
			r := Report{Written: 1, Deleted: 1}
			w := &writer{js: srv.JS, r: &r}
			if err := w.write(ctx, casMsg(key, seen, tc.value)); err != nil {
				t.Fatal(err)
			}
			if err := w.flush(ctx); err != nil {
				t.Fatal(err)
			}
			if r.Raced != 1 || tc.counts(r) != 0 {
				t.Fatalf("report %+v", r)
			}
			e, err := kv.Get(ctx, key)
			if err != nil || string(e.Value()) != "newer" {
				t.Fatalf("the newer entry must stay: %v %v", e, err)
			}
		})
	}
}
