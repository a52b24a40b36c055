package executor_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// putLease writes run id's lease as owner, expiring at exp (what an owner
// whose renewals stopped leaves behind).
func putLease(t *testing.T, r *rig, id, owner string, exp time.Time) {
	t.Helper()
	kv, err := r.srv.JS.KeyValue(context.Background(), protocol.LeasesKV)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(protocol.LeaseRecord{Owner: owner, Expires: exp})
	if _, err := kv.Put(context.Background(), protocol.LeaseKey("default", id), rec); err != nil {
		t.Fatal(err)
	}
}

// TestExpiredLeaseStaysWithALiveOwner: an expired lease is taken only from
// an owner that is gone or says it does not hold the run; an owner that
// answers "I hold it", or does not answer in time (a stall), keeps it.
func TestExpiredLeaseStaysWithALiveOwner(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id, _, err := r.cl.Start(ctx, "wait", nil, client.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.waitFor(id, events.StatusWaiting)
	past := time.Now().Add(-time.Minute)

	owner := r.srv.ConnectAs(t, "executor")
	var holds atomic.Bool
	var slow atomic.Bool
	sub, err := protocol.AnswerProbes(owner, "default", "exec-ghost.host.with.dots", func(string) bool {
		if slow.Load() {
			time.Sleep(2 * protocol.DefaultProbeTimeout)
		}
		return holds.Load()
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		holds      bool
		slow       bool
		gone       bool
		wantBusy   bool
		wantInText string
	}{
		{name: "alive and holding", holds: true, wantBusy: true, wantInText: "alive, renewing late"},
		{name: "no answer in time", holds: true, slow: true, wantBusy: true, wantInText: "did not answer"},
		{name: "alive, not holding (lost release)", holds: false},
		{name: "gone", gone: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			holds.Store(c.holds)
			slow.Store(c.slow)
			if c.gone {
				if err := sub.Unsubscribe(); err != nil {
					t.Fatal(err)
				}
				_ = owner.Flush()
			}
			putLease(t, r, id, "exec-ghost.host.with.dots", past)
			_, err := r.ex.Advance(ctx, id)
			if c.wantBusy {
				if perr.CodeOf(err) != executor.CodeRunBusy || !strings.Contains(err.Error(), c.wantInText) {
					t.Fatalf("want RUN_BUSY saying %q, got %v", c.wantInText, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("the run should have been taken over: %v", err)
			}
		})
	}
}

// TestReaperHandsOverADeadOwnersRuns: a live owner's leases are left alone
// even long past expiry; once its connection closes, the reaper deletes
// its leases and queues its runs, well within a second, and the executor
// advances them.
func TestReaperHandsOverADeadOwnersRuns(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 3; i++ {
		id, _, err := r.cl.Start(ctx, "wait", nil, client.StartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r.waitFor(id, events.StatusWaiting)
		ids = append(ids, id)
	}
	owner := r.srv.ConnectAs(t, "executor")
	if _, err := protocol.AnswerProbes(owner, "default", "exec-doomed", func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	_ = owner.Flush()
	for _, id := range ids {
		putLease(t, r, id, "exec-doomed", time.Now().Add(-time.Minute))
	}
	reaper := executor.NewReaper(r.srv.NC, r.srv.JS, "default", nil)
	reaped := make(chan string, len(ids))
	reaper.OnReap = func(runID, owner string) { reaped <- runID }
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = reaper.Run(rctx) }()

	time.Sleep(5 * executor.DefaultReapInterval) // a live owner: nothing may be reaped
	if n := reaper.Reaped(); n != 0 {
		t.Fatalf("reaped %d runs of a live owner", n)
	}
	acked := r.ex.Stats().Acked
	killed := time.Now()
	owner.Close() // what kill -9 does to the owner's connection
	got := map[string]bool{}
	for len(got) < len(ids) {
		select {
		case id := <-reaped:
			got[id] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("reaped %v of %v", got, ids)
		}
	}
	took := time.Since(killed)
	t.Logf("owner gone to %d runs handed over: %v", len(ids), took)
	if took > time.Second {
		t.Fatalf("hand-over took %v, want under 1s", took)
	}
	kv, _ := r.srv.JS.KeyValue(ctx, protocol.LeasesKV)
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, id := range ids {
			if e, err := kv.Get(ctx, protocol.LeaseKey("default", id)); err == nil {
				var rec protocol.LeaseRecord
				_ = json.Unmarshal(e.Value(), &rec)
				if rec.Owner == "exec-doomed" {
					return errString("lease of " + id + " still names the dead owner")
				}
			} else if err != jetstream.ErrKeyNotFound {
				return err
			}
		}
		if got := r.ex.Stats().Acked - acked; got < int64(len(ids)) {
			return errString("the executor has not advanced the handed-over runs yet")
		}
		return nil
	})
}

type errString string

func (e errString) Error() string { return string(e) }
