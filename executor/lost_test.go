package executor_test

import (
	"context"
	"strings"
	"testing"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/perr"
)

// TestLostTailIsParkedNotRerun: the run index says a run completed at a
// sequence the history no longer reaches (its last messages were lost, as
// after a truncated block file). Advance runs none of its code, appends
// nothing, terminates with RUN_DAMAGED and logs once; the index keeps what
// it recorded, so status reports the run damaged, not running.
func TestLostTailIsParkedNotRerun(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	const id = "run_losttail"
	st := r.cl.Store()
	start := &events.Event{Type: events.RunStarted, Attrs: map[string]string{"workflow": "busy", "queue": "busy"}}
	if _, err := st.Append(ctx, id, events.Tip{}, start); err != nil {
		t.Fatal(err)
	}
	hist, _ := st.Load(ctx, id, 0)
	sum := events.Summarize(hist)
	sum.Namespace, sum.Status, sum.LastSeq, sum.LastDigest = "default", events.StatusCompleted, start.Seq+5, "feedfacefeedfacefeedfacefeedface"
	if err := index.Put(ctx, r.srv.JS, sum); err != nil {
		t.Fatal(err)
	}
	r.srv.NC.Flush()
	for i := 0; i < 2; i++ {
		_, err := r.ex.Advance(ctx, id)
		if perr.CodeOf(err) != events.CodeRunDamaged || !strings.Contains(err.Error(), string(events.CodeHistoryBroken)) {
			t.Fatalf("advance %d: want RUN_DAMAGED naming HISTORY_BROKEN, got %v", i, err)
		}
	}
	if after, _ := st.Load(ctx, id, 0); len(after) != 1 {
		t.Fatalf("the parked run got %d events appended", len(after)-1)
	}
	if n := r.logs.count("run history lost messages"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, r.logs)
	}
	if s := r.status(id); s.Status != events.StatusDamaged || len(s.Damage) != 1 || !strings.Contains(s.Damage[0].Reason, "says completed") {
		t.Fatalf("status %+v", s)
	}
}
