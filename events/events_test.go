package events_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
)

func newStore(t *testing.T, writer string) (*events.Store, *testutil.Server) {
	s := testutil.StartServer(t)
	st, err := events.NewStore(s.NC, s.JS, "default", writer)
	if err != nil {
		t.Fatal(err)
	}
	return st, s
}

func TestCodecRoundTrip(t *testing.T) {
	in := events.Event{Type: events.StepCompleted, RunID: "r1", Pos: 3, Name: "charge", Data: []byte(`{"ok":true}`),
		Err: &events.ErrorInfo{Code: "X", Message: "m"}, Attrs: map[string]string{"b": "2", "a": "1"}}
	b, err := events.Encode(&in)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := events.Encode(&in)
	if !bytes.Equal(b, b2) {
		t.Fatal("encoding is not deterministic")
	}
	out, err := events.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Name != "charge" || out.Pos != 3 || string(out.Data) != `{"ok":true}` || out.Digest != in.Digest || out.Attrs["a"] != "1" {
		t.Fatalf("round trip mismatch: %+v", out)
	}
}

func TestDecodeBadInputIsCoded(t *testing.T) {
	good, _ := events.Encode(&events.Event{Type: events.RunStarted, RunID: "r"})
	cases := map[string]struct {
		in   []byte
		code perr.Code
	}{
		"empty":     {nil, events.CodeTruncated},
		"one byte":  {[]byte{'P'}, events.CodeTruncated},
		"garbage":   {[]byte("hello world"), events.CodeGarbage},
		"version 9": {append([]byte{'P', 9}, good[2:]...), events.CodeUnknownVersion},
		"truncated": {good[:len(good)-3], events.CodeTruncated},
		"json":      {[]byte(`{"type":"run_started"}`), events.CodeGarbage},
	}
	for name, c := range cases {
		_, err := events.Decode(c.in)
		if perr.CodeOf(err) != c.code {
			t.Errorf("%s: want %s, got %v", name, c.code, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := events.Encode(&events.Event{Type: events.StepCompleted, RunID: "r", Pos: 1, Data: []byte("{}")})
	f.Add(good)
	f.Add([]byte{'P', 1})
	f.Add([]byte{'P', 1, 0x80})
	withPrior, _ := events.Encode(&events.Event{Type: events.StepStarted, RunID: "r", Pos: 2, Prior: []events.Event{{Type: events.StepCompleted, Pos: 1, Data: []byte("1")}}})
	f.Add(withPrior)
	f.Add([]byte{'P', 2, 0x81, 0xa2, 'p', 'r', 0xdd, 0x0f, 0xff, 0xff, 0xff}) // was: fatal out of memory
	f.Add([]byte{'P', 1, 0x81, 0xa1, 'x', 0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'P', 1, 0x81, 0xa1, 'd', 0xc6, 0xff, 0xff, 0xff, 0xff})
	f.Add(append([]byte{'P', 1, 0x81, 0xa1, 'x'}, bytes.Repeat([]byte{0x91}, 64)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev events.Event
		var err error
		// Memory is bounded by the input, not by what it declares.
		if n := allocated(func() { ev, err = events.Decode(b) }); n > uint64(1<<20+64*len(b)) {
			t.Fatalf("decoding %d bytes allocated %d bytes", len(b), n)
		}
		if err != nil {
			if perr.CodeOf(err) == "" {
				t.Fatalf("uncoded error: %v", err)
			}
			return
		}
		if ev.Type == "" || ev.RunID == "" {
			t.Fatal("decoded an event without type or run")
		}
		for _, e := range events.Expand(ev) {
			if e.Type == "" || e.RunID != ev.RunID || len(e.Prior) > 0 {
				t.Fatalf("expanded an invalid event: %+v", e)
			}
		}
	})
}

func TestCreateExactlyOnce(t *testing.T) {
	st, _ := newStore(t, "w1")
	ctx := context.Background()
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			w := st.WithWriter("w" + string(rune('a'+i)))
			_, err := w.Append(ctx, "run-1", events.Tip{}, &events.Event{Type: events.RunStarted, Data: []byte(`"x"`)})
			if err == nil {
				wins.Add(1)
			} else if perr.CodeOf(err) != events.CodeRunExists {
				t.Errorf("want RUN_EXISTS, got %v", err)
			}
		}(i)
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d creators won, want 1", wins.Load())
	}
}

func TestLostAckWritesNoDuplicate(t *testing.T) {
	st, _ := newStore(t, "w1")
	ctx := context.Background()
	st.DropAcks(func() bool { return true })
	var tip events.Tip
	for i := 1; i <= 20; i++ {
		ev := &events.Event{Type: events.StepCompleted, Pos: i, Name: "s"}
		if i == 1 {
			ev.Type = events.RunStarted
		}
		if _, err := st.Append(ctx, "r", tip, ev); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		tip = events.TipOfEvent(ev)
	}
	hist, err := st.Load(ctx, "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 20 {
		t.Fatalf("history has %d events, want 20 (no duplicates)", len(hist))
	}
}

func TestConflictClassification(t *testing.T) {
	st, _ := newStore(t, "exec-A")
	ctx := context.Background()
	start := &events.Event{Type: events.RunStarted}
	_, err := st.Append(ctx, "r", events.Tip{}, start)
	s1 := events.TipOfEvent(start)
	if err != nil {
		t.Fatal(err)
	}
	// Another executor appends step 1.
	other := st.WithWriter("exec-B")
	if _, err := other.Append(ctx, "r", s1, &events.Event{Type: events.StepStarted, Pos: 1, Name: "a"}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Append(ctx, "r", s1, &events.Event{Type: events.StepStarted, Pos: 1, Name: "a"})
	var c *events.ConflictError
	if !errors.As(err, &c) || c.Code != events.CodeLostOwnership {
		t.Fatalf("want LOST_OWNERSHIP, got %v", err)
	}
	if perr.CodeOf(err) != events.CodeLostOwnership {
		t.Fatalf("perr.CodeOf: %q", perr.CodeOf(err))
	}
	// A signal arrives before our append.
	last := mustLast(t, st, "r")
	if _, _, err := st.AppendSignal(ctx, "r", &events.Event{Type: events.CancelRequest}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = st.Append(ctx, "r", last, &events.Event{Type: events.StepCompleted, Pos: 1, Name: "a"})
	if perr.CodeOf(err) != events.CodeSignalArrived {
		t.Fatalf("want SIGNAL_ARRIVED, got %v", err)
	}
	// Our own writer produced something different at the same position.
	last = mustLast(t, st, "r")
	if _, err := st.Append(ctx, "r", last, &events.Event{Type: events.StepStarted, Pos: 9, Name: "x"}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Append(ctx, "r", last, &events.Event{Type: events.StepStarted, Pos: 9, Name: "y"})
	if perr.CodeOf(err) != events.CodeNonDeterminism {
		t.Fatalf("want NONDETERMINISM, got %v", err)
	}
}

func TestLargePayloadGoesToObjectStore(t *testing.T) {
	st, _ := newStore(t, "w")
	ctx := context.Background()
	big := bytes.Repeat([]byte("a"), events.DefaultBlobThreshold*3)
	ev := &events.Event{Type: events.RunStarted, Data: big}
	if _, err := st.Append(ctx, "r", events.Tip{}, ev); err != nil {
		t.Fatal(err)
	}
	if ev.Blob == "" {
		t.Fatal("payload above threshold was not offloaded")
	}
	hist, err := st.Load(ctx, "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hist[0].Data, big) {
		t.Fatal("blob did not come back on load")
	}
}

func TestLoadMatchesOrderedConsumerAcrossBatches(t *testing.T) {
	st, _ := newStore(t, "w")
	ctx := context.Background()
	var tip events.Tip
	for i := 0; i < 2500; i++ {
		run := "r"
		if i%3 == 0 { // interleave another run
			if _, err := st.Append(ctx, "other", mustLast(t, st, "other"), &events.Event{Type: events.Annotation}); err != nil {
				t.Fatal(err)
			}
		}
		ev := &events.Event{Type: events.StepCompleted, Pos: i + 1}
		if _, err := st.Append(ctx, run, tip, ev); err != nil {
			t.Fatal(err)
		}
		tip = events.TipOfEvent(ev)
	}
	a, err := st.Load(ctx, "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.LoadOrdered(ctx, "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 2500 || len(b) != 2500 {
		t.Fatalf("direct get %d, ordered %d, want 2500", len(a), len(b))
	}
	for i := range a {
		if a[i].Seq != b[i].Seq || a[i].Pos != i+1 {
			t.Fatalf("mismatch at %d", i)
		}
	}
	tail, _ := st.Load(ctx, "r", a[2000].Seq)
	if len(tail) != 499 {
		t.Fatalf("load after seq: %d events, want 499", len(tail))
	}
}

// mustLast is the tip of the run's history (the zero Tip when it has none).
func mustLast(t *testing.T, st *events.Store, run string) events.Tip {
	h, err := st.Load(context.Background(), run, 0)
	if err != nil {
		t.Fatal(err)
	}
	return events.TipOf(h)
}

func TestBadRunID(t *testing.T) {
	st, _ := newStore(t, "w")
	for _, id := range []string{"", "a.b", "a*", "a>", "a b", string(make([]byte, 200))} {
		_, err := st.Append(context.Background(), id, events.Tip{}, &events.Event{Type: events.RunStarted})
		if perr.CodeOf(err) != events.CodeBadID {
			t.Errorf("id %q: want BAD_ID, got %v", id, err)
		}
	}
}

func TestGroupCommitKeepsPerRunCASAndSurvivesLostAcks(t *testing.T) {
	st, _ := newStore(t, "w")
	st.EnableGroupCommit()
	var lost atomic.Int32
	st.DropAcks(func() bool { return lost.Add(1)%5 == 0 })
	ctx := context.Background()
	const runs, per = 40, 25
	var wg sync.WaitGroup
	for r := 0; r < runs; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			id := "g" + string(rune('A'+r%26)) + string(rune('a'+r/26))
			var tip events.Tip
			for i := 1; i <= per; i++ {
				ev := &events.Event{Type: events.StepCompleted, Pos: i, Name: "s"}
				if _, err := st.Append(ctx, id, tip, ev); err != nil {
					t.Errorf("%s/%d: %v", id, i, err)
					return
				}
				tip = events.TipOfEvent(ev)
			}
		}(r)
	}
	wg.Wait()
	for r := 0; r < runs; r++ {
		id := "g" + string(rune('A'+r%26)) + string(rune('a'+r/26))
		h, err := st.Load(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != per {
			t.Fatalf("%s has %d events, want %d (no loss, no duplicate)", id, len(h), per)
		}
		for i, e := range h {
			if e.Pos != i+1 {
				t.Fatalf("%s out of order at %d", id, i)
			}
		}
	}
	if gs := st.GroupStats(); gs.Batches == 0 || gs.Grouped < int64(runs) {
		t.Fatalf("no batches formed: %+v", gs)
	} else {
		t.Logf("group commit: %+v", gs)
	}
	// A stale expectation inside a batch is still a conflict for that run only.
	first, _ := st.Load(ctx, "gAa", 0)
	if _, err := st.Append(ctx, "gAa", events.TipOf(first[:1]), &events.Event{Type: events.StepCompleted, Pos: 99, Name: "late"}); perr.CodeOf(err) != events.CodeLostOwnership {
		t.Fatalf("stale append: %v", err)
	}
}

// TestPriorsRideInOneMessage: an event with priors is stored as one
// version-2 message and read back as the priors followed by the event,
// sharing its sequence and digest; large priors go to the object store and
// a lost ack is still resolved by digest.
func TestPriorsRideInOneMessage(t *testing.T) {
	st, _ := newStore(t, "w")
	ctx := context.Background()
	start := &events.Event{Type: events.RunStarted}
	if _, err := st.Append(ctx, "r", events.Tip{}, start); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("b"), events.DefaultBlobThreshold*2)
	st.DropAcks(func() bool { return true })
	ev := &events.Event{Type: events.StepStarted, Pos: 2, Name: "next", Key: "r:2",
		Prior: []events.Event{{Type: events.StepCompleted, Pos: 1, Name: "first", Attempt: 1, Data: big}}}
	seq2, err := st.Append(ctx, "r", events.TipOfEvent(start), ev)
	if err != nil {
		t.Fatal(err)
	}
	st.DropAcks(nil)
	if ev.V != 2 {
		t.Fatalf("an event with priors is written as version %d, want 2", ev.V)
	}
	hist, err := st.Load(ctx, "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 3 || hist[1].Type != events.StepCompleted || hist[2].Type != events.StepStarted {
		t.Fatalf("history %+v", hist)
	}
	if hist[1].Seq != seq2 || hist[2].Seq != seq2 || hist[1].Digest != hist[2].Digest || hist[1].RunID != "r" || hist[1].Writer != "w" {
		t.Fatalf("prior does not share the message's identity: %+v / %+v", hist[1], hist[2])
	}
	if !bytes.Equal(hist[1].Data, big) {
		t.Fatal("a large prior did not come back from the object store")
	}
	// A version-1 event must not carry priors; nested priors are refused.
	b, _ := events.Encode(&events.Event{V: 1, Type: events.StepStarted, RunID: "r", Prior: []events.Event{{Type: events.StepCompleted}}})
	if _, err := events.Decode(b); perr.CodeOf(err) != events.CodeInvalid {
		t.Fatalf("v1 with priors: want %s, got %v", events.CodeInvalid, err)
	}
	b, _ = events.Encode(&events.Event{Type: events.StepStarted, RunID: "r", Prior: []events.Event{{Type: events.StepCompleted, Prior: []events.Event{{Type: events.StepCompleted}}}}})
	if _, err := events.Decode(b); perr.CodeOf(err) != events.CodeInvalid {
		t.Fatalf("nested priors: want %s, got %v", events.CodeInvalid, err)
	}
	// Without priors the format stays version 1 (older readers read it).
	plain := &events.Event{Type: events.StepStarted, RunID: "r"}
	if b, _ = events.Encode(plain); b[1] != 1 {
		t.Fatalf("an event without priors is written as version %d, want 1", b[1])
	}
}
