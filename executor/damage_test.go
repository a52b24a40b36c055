package executor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/httpapi"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), sub)
}

func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// rig is a real embedded server, one executor logging into a buffer, and
// workflows that wait for a person ("wait") or run a step until released
// ("busy").
type rig struct {
	t       testing.TB
	srv     *testutil.Server
	cl      *client.Client
	ex      *executor.Executor
	logs    *lockedBuf
	mu      sync.Mutex
	started map[string]chan struct{} // busy runs whose step runs
	release map[string]chan struct{}
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, srv: testutil.StartServer(t), logs: &lockedBuf{}, started: map[string]chan struct{}{}, release: map[string]chan struct{}{}}
	reg := polos.NewRegistry()
	polos.Register(reg, "wait", func(ctx polos.Context, _ struct{}) (string, error) {
		_, err := polos.Suspend[json.RawMessage](ctx, "approve", map[string]string{"q": "ok?"})
		return "decided", err
	})
	polos.Register(reg, "busy", func(ctx polos.Context, _ struct{}) (string, error) {
		id := ctx.RunID()
		if _, err := polos.Step(ctx, "work", func(context.Context, string) (int, error) {
			started, release := r.chans(id)
			close(started)
			<-release
			return 1, nil
		}); err != nil {
			return "", err
		}
		return polos.Step(ctx, "after", func(context.Context, string) (string, error) { return "done", nil })
	})
	cl, err := client.New(r.srv.NC, "default")
	if err != nil {
		t.Fatal(err)
	}
	r.cl = cl
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	r.ex, err = executor.New(r.srv.NC, r.srv.JS, reg, executor.Options{ID: "exec-0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.ex.Run(ctx); close(done) }()
	t.Cleanup(func() {
		r.mu.Lock()
		for _, c := range r.release {
			select {
			case <-c:
			default:
				close(c)
			}
		}
		r.mu.Unlock()
		cancel()
		<-done
	})
	return r
}

func (r *rig) chans(id string) (started, release chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started[id] == nil {
		r.started[id], r.release[id] = make(chan struct{}), make(chan struct{})
	}
	return r.started[id], r.release[id]
}

func (r *rig) status(id string) events.Summary {
	s, err := r.cl.Status(context.Background(), id)
	if err != nil {
		r.t.Fatalf("status of %s: %v", id, err)
	}
	return s
}

func (r *rig) waitFor(id, status string) events.Summary {
	r.t.Helper()
	var s events.Summary
	testutil.CheckFor(r.t, 30*time.Second, 20*time.Millisecond, func() error {
		if s = r.status(id); s.Status != status {
			return fmt.Errorf("run %s is %s, want %s", id, s.Status, status)
		}
		return nil
	})
	return s
}

// publish stores data on subject (no compare-and-swap: what a buggy or
// hostile writer does) and returns its sequence.
func (r *rig) publish(subject string, data []byte) uint64 {
	r.t.Helper()
	ack, err := r.srv.JS.Publish(context.Background(), subject, data)
	if err != nil {
		r.t.Fatalf("publish %d bytes on %s: %v", len(data), subject, err)
	}
	return ack.Sequence
}

// garbage is bytes that must park the run they land on.
type garbage struct {
	name string
	// make returns the subject (of run id) and the bytes; other is a
	// healthy run whose stored events can be copied.
	make func(t *testing.T, r *rig, id, other string) (events.Type, []byte)
	// perMessage: damage a reader sees in the message alone, so the damage
	// watch parks a waiting run without any task; false: only the history
	// shows it (the run is parked by its next task).
	perMessage bool
}

func encode(t *testing.T, e events.Event) []byte {
	b, err := events.Encode(&e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func garbageKinds() []garbage {
	kinds := []garbage{
		{"valid header, truncated msgpack body", func(t *testing.T, _ *rig, id, _ string) (events.Type, []byte) {
			b := encode(t, events.Event{Type: events.Resumed, RunID: id, Key: "approve", Data: []byte(`{"approved":true}`), Time: 1})
			return events.Resumed, b[:len(b)/2]
		}, true},
		{"huge payload", func(_ *testing.T, _ *rig, _, _ string) (events.Type, []byte) {
			b := make([]byte, 900<<10)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			b[0], b[1] = 'P', 2
			return events.StepCompleted, b
		}, true},
		{"an 11-byte array header that exhausted memory", func(*testing.T, *rig, string, string) (events.Type, []byte) {
			return events.StepCompleted, []byte{'P', 2, 0x81, 0xa2, 'p', 'r', 0xdd, 0x0f, 0xff, 0xff, 0xff}
		}, true},
		{"another run's event copied onto this run", func(t *testing.T, r *rig, _, other string) (events.Type, []byte) {
			raw, err := r.cl.RawHistory(context.Background(), other)
			if err != nil {
				t.Fatal(err)
			}
			return events.RunStarted, raw[0].Data
		}, true},
		{"a valid event at a wrong position", func(t *testing.T, _ *rig, id, _ string) (events.Type, []byte) {
			return events.StepCompleted, encode(t, events.Event{Type: events.StepCompleted, RunID: id, Pos: 42, Name: "forged", Writer: "intruder", Data: []byte("1"), Time: time.Now().UnixNano()})
		}, false},
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 4; i++ {
		b := make([]byte, 1+rng.IntN(2000))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if i%2 == 1 { // past the magic and version check, into the body
			b[0], b[1] = 'P', byte(1+i%2)
		}
		kinds = append(kinds, garbage{fmt.Sprintf("random bytes #%d (%d bytes)", i, len(b)), func(*testing.T, *rig, string, string) (events.Type, []byte) {
			return events.StepCompleted, b
		}, true})
	}
	return kinds
}

// TestGarbageOnARunSubjectParksTheRun publishes each kind of garbage on a
// waiting run and on a running run, and checks that every run ends parked
// as damaged, visibly everywhere, with its task terminated, one log line,
// and no retry loop; and that a cancel after the garbage still ends it.
func TestGarbageOnARunSubjectParksTheRun(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	healthy, _, err := r.cl.Start(ctx, "wait", nil, client.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.waitFor(healthy, events.StatusWaiting)

	type parked struct {
		id, mode, kind string
		seq            uint64
	}
	var runs []parked
	for _, g := range garbageKinds() {
		for _, mode := range []string{"waiting", "running"} {
			wf := map[string]string{"waiting": "wait", "running": "busy"}[mode]
			id, _, err := r.cl.Start(ctx, wf, nil, client.StartOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if mode == "waiting" {
				r.waitFor(id, events.StatusWaiting)
			} else {
				started, _ := r.chans(id)
				<-started
			}
			typ, data := g.make(t, r, id, healthy)
			seq := r.publish(protocol.RunSubject("default", id, string(typ)), data)
			switch {
			case mode == "running":
				_, release := r.chans(id)
				close(release) // the step ends; its completion cannot be stored after the garbage
			case !g.perMessage:
				// Nothing in the message itself shows the damage: the run is
				// parked by its next task (a timer, a decision, a restart).
				if err := protocol.Enqueue(ctx, r.srv.JS, "default", "wait", id, "wake", ""); err != nil {
					t.Fatal(err)
				}
			}
			runs = append(runs, parked{id: id, mode: mode, kind: g.name, seq: seq})
		}
	}

	api := httptest.NewServer(httpapi.New(httpapi.Options{Client: r.cl, APIKey: "test-key"}))
	defer api.Close()
	for _, p := range runs {
		t.Run(p.mode+"/"+p.kind, func(t *testing.T) {
			s := r.waitFor(p.id, events.StatusDamaged)
			if len(s.Damage) == 0 || s.Damage[0].Seq != p.seq {
				t.Fatalf("damage %+v, want the message at seq %d", s.Damage, p.seq)
			}
			for _, want := range []string{fmt.Sprintf("seq %d", p.seq), protocol.RunsStreamOf(p.id), "partition", "--raw", "polos cancel " + p.id} {
				if !strings.Contains(s.Error.Message, want) {
					t.Errorf("error %q lacks %q", s.Error.Message, want)
				}
			}
			// The run index (polos list) shows it, once the executor parked it.
			testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
				l, err := r.cl.ListRuns(ctx, client.ListFilter{Status: events.StatusDamaged})
				if err != nil {
					return err
				}
				for _, x := range l.Runs {
					if x.ID == p.id && x.Damage[0].Seq == p.seq {
						return nil
					}
				}
				return fmt.Errorf("polos list --status damaged lacks %s", p.id)
			})
			// The HTTP API answers 200 with the status, not 500.
			req, _ := http.NewRequest("GET", api.URL+"/v1/runs/"+p.id, nil)
			req.Header.Set("Authorization", "Bearer test-key")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var got events.Summary
			_ = json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || got.Status != events.StatusDamaged || got.Damage[0].Seq != p.seq {
				t.Fatalf("GET /v1/runs/%s: %d %+v", p.id, resp.StatusCode, got)
			}
			// Logged once, not once per delivery.
			testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
				if n := r.logs.count("run=" + p.id + " status=damaged"); n != 1 {
					return fmt.Errorf("%d damage log lines for %s, want 1", n, p.id)
				}
				return nil
			})
		})
	}

	// No retry loop: nothing is advanced or redelivered any more.
	cons, err := r.srv.JS.Consumer(ctx, protocol.TasksStream, protocol.ExecutorConsumer("default"))
	if err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumAckPending != 0 || info.NumPending != 0 {
			return fmt.Errorf("tasks still in flight: %d pending ack, %d pending", info.NumAckPending, info.NumPending)
		}
		return nil
	})
	before, _ := cons.Info(ctx)
	stats := r.ex.Stats()
	if stats.Terminated < int64(len(runs)) {
		t.Fatalf("%d tasks terminated, want at least one per damaged run (%d): %+v", stats.Terminated, len(runs), stats)
	}
	time.Sleep(3 * time.Second) // a quiet period is what is measured
	after, _ := cons.Info(ctx)
	if got := r.ex.Stats(); got.Advances != stats.Advances || after.NumRedelivered != before.NumRedelivered || after.Delivered.Consumer != before.Delivered.Consumer {
		t.Fatalf("busy after parking: advances %d -> %d, deliveries %d -> %d, redelivered %d -> %d",
			stats.Advances, got.Advances, before.Delivered.Consumer, after.Delivered.Consumer, before.NumRedelivered, after.NumRedelivered)
	}
	if n := r.logs.count("advancing run failed"); n != 0 {
		t.Fatalf("%d retry log lines:\n%s", n, r.logs)
	}

	// A cancel after the garbage is acted on: cancelling replays nothing.
	for _, p := range runs {
		t.Run("cancel/"+p.mode+"/"+p.kind, func(t *testing.T) {
			if err := r.cl.Cancel(ctx, p.id); err != nil {
				t.Fatal(err)
			}
			s := r.waitFor(p.id, events.StatusCancelled)
			if s.DamagedMessages == 0 || s.Damage[0].Seq != p.seq {
				t.Fatalf("a cancelled damaged run still reports its damage: %+v", s)
			}
			hist, err := r.cl.History(ctx, p.id, 0)
			if err != nil {
				t.Fatal(err)
			}
			if last := hist[len(hist)-1]; last.Type != events.RunCancelled || last.Seq <= p.seq {
				t.Fatalf("last event %s at seq %d, want run_cancelled after seq %d", last.Type, last.Seq, p.seq)
			}
		})
	}
	if s := r.status(healthy); s.Status != events.StatusWaiting || s.DamagedMessages != 0 {
		t.Fatalf("the run whose event was copied is untouched: %+v", s)
	}
}

func statusIs(r *rig, id, want string) error {
	s, err := r.cl.Status(context.Background(), id)
	if err != nil {
		return err
	}
	if s.Status != want {
		return fmt.Errorf("run %s is %s, want %s", id, s.Status, want)
	}
	return nil
}
