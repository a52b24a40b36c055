package polos_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/replay"
)

var rewrite = flag.Bool("rewrite", false, "regenerate replay/testdata/golden from live runs")

const goldenDir = "replay/testdata/golden"

var goldenFlaky atomic.Int32

// goldenRegistry holds the workflows of the golden corpus. Changing one of
// them incompatibly makes TestGoldenHistories fail: that is the point.
func goldenRegistry() *polos.Registry {
	reg := polos.NewRegistry()
	polos.Register(reg, "golden_steps", func(ctx polos.Context, name string) (string, error) {
		greeting, err := polos.Step(ctx, "compose", func(context.Context, string) (string, error) { return "Hello, " + name, nil })
		if err != nil {
			return "", err
		}
		_ = ctx.Now()
		_ = ctx.UUID()
		_ = ctx.Random()
		return polos.Step(ctx, "shout", func(context.Context, string) (string, error) { return strings.ToUpper(greeting), nil })
	})
	polos.Register(reg, "golden_retry", func(ctx polos.Context, _ struct{}) (string, error) {
		return polos.Step(ctx, "flaky", func(context.Context, string) (string, error) {
			if goldenFlaky.Add(1)%3 != 0 {
				return "", errors.New("transient")
			}
			return "ok", nil
		}, polos.WithRetry(polos.RetryPolicy{MaxAttempts: 5, InitialInterval: time.Millisecond}))
	})
	polos.Register(reg, "golden_approval", func(ctx polos.Context, cmd string) (string, error) {
		if _, err := polos.Step(ctx, "plan", func(context.Context, string) (string, error) { return "run " + cmd, nil }); err != nil {
			return "", err
		}
		d, err := polos.Suspend[struct {
			Approved bool `json:"approved"`
		}](ctx, "approve", map[string]string{"command": cmd})
		if err != nil || !d.Approved {
			return "rejected", err
		}
		return polos.Step(ctx, "run", func(context.Context, string) (string, error) { return "ran " + cmd, nil })
	})
	polos.Register(reg, "golden_sleep", func(ctx polos.Context, _ struct{}) (string, error) {
		if err := ctx.Sleep(10 * time.Millisecond); err != nil {
			return "", err
		}
		return polos.Step(ctx, "after", func(context.Context, string) (string, error) { return "woke", nil })
	})
	return reg
}

// mutations turn a good history into one the code must reject.
var mutations = map[string]struct {
	from   string
	mutate func([]events.Event) []events.Event
}{
	"renamed_step": {"golden_steps", func(h []events.Event) []events.Event {
		for i := range h {
			if h[i].Name == "compose" {
				h[i].Name = "compose_v2"
			}
		}
		return h
	}},
	"step_became_sleep": {"golden_sleep", func(h []events.Event) []events.Event {
		for i := range h {
			if h[i].Type == events.TimerSet || h[i].Type == events.TimerFired {
				h[i].Type, h[i].Name = events.StepCompleted, "before"
			}
		}
		return h
	}},
	"extra_step_in_history": {"golden_approval", func(h []events.Event) []events.Event {
		extra := h[len(h)-2]
		extra.Pos, extra.Name = extra.Pos+1, "notify"
		return append(h[:len(h)-1], extra, h[len(h)-1])
	}},
}

func TestGoldenHistories(t *testing.T) {
	if *rewrite {
		writeGolden(t)
	}
	reg := goldenRegistry()
	good, _ := filepath.Glob(filepath.Join(goldenDir, "good", "*.jsonl"))
	bad, _ := filepath.Glob(filepath.Join(goldenDir, "bad", "*.jsonl"))
	if len(good) < 5 || len(bad) < 3 {
		t.Fatalf("golden corpus too small: %d good, %d bad (run go test -run TestGoldenHistories -rewrite .)", len(good), len(bad))
	}
	for _, path := range append(good, bad...) {
		hist := readHistory(t, path)
		wf, ok := reg.Lookup(hist[0].Attr("workflow"))
		if !ok {
			t.Fatalf("%s: unknown workflow %q", path, hist[0].Attr("workflow"))
		}
		o, appended := replay.ReplayOnly(hist, wf, hist[len(hist)-1].At())
		name := filepath.Base(path)
		if strings.Contains(path, "/good/") {
			last := hist[len(hist)-1]
			switch {
			case last.Type.IsTerminal():
				if len(appended) != 1 || appended[0].Type != last.Type || string(appended[0].Data) != string(last.Data) {
					t.Errorf("%s: replay produced %v, history ends with %s %s", name, typesOf(appended), last.Type, last.Data)
				}
			case o.Kind != replay.Waiting || len(appended) != 0:
				t.Errorf("%s: want a waiting run with nothing appended, got %s %v (%v)", name, o.Kind, typesOf(appended), o.Err)
			}
			continue
		}
		if o.Kind != replay.Parked || perr.CodeOf(o.Err) != events.CodeNonDeterminism {
			t.Errorf("%s: want parked on non-determinism, got %s %v", name, o.Kind, o.Err)
			continue
		}
		if len(appended) != 1 || appended[0].Type != events.RunParked || !strings.Contains(o.Err.Error(), "position") {
			t.Errorf("%s: parked without a clear run_parked event: %v %v", name, typesOf(appended), o.Err)
		}
	}
}

func typesOf(h []events.Event) []events.Type { return types(h) }

func readHistory(t *testing.T, path string) []events.Event {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := events.ReadJSONL(f)
	if err != nil || len(h) == 0 {
		t.Fatalf("%s: %v", path, err)
	}
	return h
}

func writeGolden(t *testing.T) {
	h := newHarness(t, goldenRegistry(), 1)
	ctx := context.Background()
	save := func(dir, name string, hist []events.Event) {
		os.MkdirAll(filepath.Join(goldenDir, dir), 0o755)
		f, err := os.Create(filepath.Join(goldenDir, dir, name+".jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := events.WriteJSONL(f, hist); err != nil {
			t.Fatal(err)
		}
	}
	live := map[string][]events.Event{}
	run := func(name, wf string, in any, decide func(id string)) {
		id := h.start(wf, in)
		if decide != nil {
			decide(id)
		} else {
			h.result(id)
		}
		hist := h.history(id)
		live[wf] = hist
		save("good", name, hist)
	}
	run("steps_completed", "golden_steps", "ada", nil)
	run("retry_attempts", "golden_retry", nil, nil)
	run("sleep_fired", "golden_sleep", nil, nil)
	run("approval_waiting", "golden_approval", "ls", func(id string) { h.waitStatus(id, events.StatusWaiting) })
	run("approval_approved", "golden_approval", "ls", func(id string) {
		h.waitStatus(id, events.StatusWaiting)
		if _, err := h.cl.Resume(ctx, id, "approve", client.Decision{Data: json.RawMessage(`{"approved":true}`)}); err != nil {
			t.Fatal(err)
		}
		h.result(id)
	})
	for name, m := range mutations {
		src := append([]events.Event(nil), live[m.from]...)
		save("bad", name, m.mutate(src))
	}
}
