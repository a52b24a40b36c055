package events_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// body prefixes the format header to a msgpack body.
func body(version byte, b ...byte) []byte { return append([]byte{'P', version}, b...) }

func encoded(t testing.TB, e events.Event) []byte {
	t.Helper()
	b, err := events.Encode(&e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// allocated reports the bytes fn allocated.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecodeRefusesHostileShapes: every shape here is a few bytes that
// declare huge or endless structure. Before checkShape, the first one made
// the msgpack decoder allocate 2^28 events and the process die with
// "fatal error: runtime: out of memory" (not a recoverable panic).
func TestDecodeRefusesHostileShapes(t *testing.T) {
	good := encoded(t, events.Event{Type: events.StepCompleted, RunID: "r", Pos: 1, Data: []byte("{}")})
	deep := body(2, 0x81, 0xa1, 'x')
	for i := 0; i < 10_000; i++ {
		deep = append(deep, 0x91)
	}
	cases := []struct {
		name string
		in   []byte
		code perr.Code
	}{
		{"array of 2^28 priors", body(2, 0x81, 0xa2, 'p', 'r', 0xdd, 0x0f, 0xff, 0xff, 0xff), events.CodeGarbage},
		{"array longer than the message", body(2, 0x81, 0xa2, 'p', 'r', 0xdc, 0x00, 0x30), events.CodeTruncated},
		{"map of 2^32-1 attrs", body(1, 0x81, 0xa1, 'x', 0xdf, 0xff, 0xff, 0xff, 0xff), events.CodeGarbage},
		{"top-level map32", body(1, 0xdf, 0x7f, 0xff, 0xff, 0xff), events.CodeGarbage},
		{"nesting 10,000 deep", deep, events.CodeGarbage},
		{"4 GiB bin", body(1, 0x81, 0xa1, 'd', 0xc6, 0xff, 0xff, 0xff, 0xff), events.CodeTruncated},
		{"4 GiB ext", body(1, 0x81, 0xa1, 'd', 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01), events.CodeTruncated},
		{"header cut inside a length", body(1, 0x81, 0xa1, 't', 0xda, 0x01), events.CodeTruncated},
		{"never-used byte 0xc1", body(1, 0x81, 0xa1, 't', 0xc1), events.CodeGarbage},
		{"body is an array", body(1, 0x92, 0x01, 0x02), events.CodeGarbage},
		{"no body", body(1), events.CodeTruncated},
		{"trailing bytes", append(append([]byte{}, good...), 0x00), events.CodeGarbage},
		{"reserved type", encoded(t, events.Event{Type: events.Unreadable, RunID: "r"}), events.CodeInvalid},
		{"negative position", encoded(t, events.Event{Type: events.StepCompleted, RunID: "r", Pos: -1}), events.CodeInvalid},
		{"prior of reserved type", encoded(t, events.Event{Type: events.StepStarted, RunID: "r", Pos: 2, Prior: []events.Event{{Type: events.Unreadable}}}), events.CodeInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			n := allocated(func() { _, err = events.Decode(tc.in) })
			if perr.CodeOf(err) != tc.code {
				t.Fatalf("want %s, got %v", tc.code, err)
			}
			if limit := uint64(64<<10 + 64*len(tc.in)); n > limit {
				t.Fatalf("decoding %d bytes allocated %d bytes (limit %d)", len(tc.in), n, limit)
			}
		})
	}
}

// TestEncodedShapesDecode: what Polos writes passes the shape check,
// including the largest shapes it allows.
func TestEncodedShapesDecode(t *testing.T) {
	attrs := map[string]string{}
	for i := 0; i < events.MaxAttrs; i++ {
		attrs[strings.Repeat("k", i%7+1)+string(rune('a'+i%26))+hex.EncodeToString([]byte{byte(i), byte(i >> 8)})] = "v"
	}
	priors := make([]events.Event, events.MaxPriors)
	for i := range priors {
		priors[i] = events.Event{Type: events.StepCompleted, Pos: i + 1, Data: []byte(`"x"`), Attrs: map[string]string{"a": "b"}, Err: &events.ErrorInfo{Code: "C", Message: "m"}}
	}
	cases := []struct {
		name string
		ev   events.Event
	}{
		{"run started", events.Event{Type: events.RunStarted, RunID: "r", Data: []byte(`{"a":[1,2,{"b":null}]}`), Attrs: map[string]string{"workflow": "w", "queue": "q"}}},
		{"large data", events.Event{Type: events.StepCompleted, RunID: "r", Pos: 3, Data: bytes.Repeat([]byte("x"), 70_000)}},
		{"most attrs", events.Event{Type: events.Annotation, RunID: "r", Attrs: attrs}},
		{"most priors", events.Event{Type: events.StepStarted, RunID: "r", Pos: events.MaxPriors + 1, Prior: priors}},
		{"big numbers", events.Event{Type: events.StepStarted, RunID: "r", Pos: 1 << 40, Attempt: 70_000, Time: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := encoded(t, tc.ev)
			got, err := events.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tc.ev.Type || len(got.Prior) != len(tc.ev.Prior) || len(got.Attrs) != len(tc.ev.Attrs) || !bytes.Equal(got.Data, tc.ev.Data) {
				t.Fatalf("round trip changed the event")
			}
		})
	}
}

func TestReadMessagePlacesEveryMessage(t *testing.T) {
	const ns, run = "default", "run_a"
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	subj := func(t events.Type) string { return protocol.RunSubject(ns, run, string(t)) }
	ok := encoded(t, events.Event{Type: events.StepCompleted, RunID: run, Pos: 1, Prior: []events.Event{{Type: events.StepCompleted, Pos: 1}}})
	other := encoded(t, events.Event{Type: events.RunStarted, RunID: "run_b", Attrs: map[string]string{"workflow": "w"}})
	cases := []struct {
		name    string
		subject string
		data    []byte
		code    perr.Code // "" = readable
		found   string
	}{
		{"readable with a prior", subj(events.StepCompleted), ok, "", ""},
		{"random bytes", subj(events.StepCompleted), []byte{0xde, 0xad, 0xbe, 0xef}, events.CodeGarbage, ""},
		{"truncated body", subj(events.StepCompleted), ok[:len(ok)-4], events.CodeTruncated, ""},
		{"another run's event", subj(events.RunStarted), other, events.CodeWrongRun, "run_started event of run run_b"},
		{"type differs from the subject", subj(events.RunCompleted), ok, events.CodeWrongRun, "step_completed event of run run_a at position 1"},
		{"empty message", subj(events.Annotation), nil, events.CodeTruncated, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evs := events.ReadMessage(ns, run, events.StoredMsg{Stream: protocol.RunsStreamOf(run), Subject: tc.subject, Seq: 42, Time: at, Data: tc.data})
			if tc.code == "" {
				if len(evs) != 2 || evs[0].Seq != 42 || evs[1].Seq != 42 || evs[1].Type != events.StepCompleted {
					t.Fatalf("want the message's two events at seq 42, got %+v", evs)
				}
				return
			}
			if len(evs) != 1 {
				t.Fatalf("want one stand-in, got %d events", len(evs))
			}
			d, isDamage := events.DamageOf(evs[0])
			if !isDamage || evs[0].Seq != 42 || evs[0].RunID != run || !evs[0].At().Equal(at) {
				t.Fatalf("stand-in %+v", evs[0])
			}
			head := hex.EncodeToString(tc.data[:min(len(tc.data), events.DefaultHeadBytes)])
			if d.Code != string(tc.code) || d.Seq != 42 || d.Size != len(tc.data) || d.Head != head ||
				d.Stream != protocol.RunsStreamOf(run) || d.Partition != protocol.RunPartition(run) || d.Subject != tc.subject {
				t.Fatalf("damage %+v", d)
			}
			if !strings.Contains(d.Found, tc.found) {
				t.Fatalf("found %q, want it to mention %q", d.Found, tc.found)
			}
		})
	}
}

func TestRunIDOfSubject(t *testing.T) {
	cases := []struct{ subject, want string }{
		{protocol.RunSubject("default", "run_x", "step_completed"), "run_x"},
		{"polos.default.run.2.run_x.a.b.c", "run_x"},
		{"polos.other.run.2.run_x.step_completed", ""},
		{"polos.default.run.2", ""},
		{"polos.default.task.q", ""},
	}
	for _, tc := range cases {
		t.Run(tc.subject, func(t *testing.T) {
			if got := events.RunIDOfSubject("default", tc.subject); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// hist builds a history of one run: each element is one stored message,
// sequences 1, 2, 3...; the digests are distinct unless a test copies one.
func hist(msgs ...events.Event) []events.Event {
	var out []events.Event
	for i, m := range msgs {
		m.RunID = "r"
		m.Seq = uint64(i + 1)
		if m.Digest == "" {
			m.Digest = "d" + string(rune('a'+i))
		}
		out = append(out, events.Expand(m)...)
	}
	return out
}

func TestVetAcceptsWhatPolosWrites(t *testing.T) {
	start := events.Event{Type: events.RunStarted, Attrs: map[string]string{"workflow": "w"}}
	cases := []struct {
		name string
		h    []events.Event
	}{
		{"steps one append each", hist(start,
			events.Event{Type: events.StepStarted, Pos: 1},
			events.Event{Type: events.StepStarted, Pos: 2, Prior: []events.Event{{Type: events.StepCompleted, Pos: 1}}},
			events.Event{Type: events.RunCompleted, Prior: []events.Event{{Type: events.StepCompleted, Pos: 2}}})},
		{"idempotent steps without start marks", hist(start,
			events.Event{Type: events.StepCompleted, Pos: 2, Prior: []events.Event{{Type: events.StepCompleted, Pos: 1}}},
			events.Event{Type: events.RunCompleted})},
		{"signals and waits", hist(start,
			events.Event{Type: events.Suspended, Pos: 1, Key: "k"},
			events.Event{Type: events.Resumed, Key: "k"},
			events.Event{Type: events.TimerSet, Pos: 2},
			events.Event{Type: events.TimerFired, Pos: 2},
			events.Event{Type: events.WaitRegistered, Pos: 3},
			events.Event{Type: events.EventReceived, Pos: 3},
			events.Event{Type: events.Annotation, Name: "slot_released"},
			events.Event{Type: events.CancelRequest},
			events.Event{Type: events.RunCancelled})},
		{"a retry starts positions again", hist(start,
			events.Event{Type: events.StepStarted, Pos: 1},
			events.Event{Type: events.StepStarted, Pos: 2},
			events.Event{Type: events.RunRetry},
			events.Event{Type: events.StepStarted, Pos: 1})},
		{"replayed positions", hist(start,
			events.Event{Type: events.StepStarted, Pos: 1, Attempt: 1},
			events.Event{Type: events.StepFailed, Pos: 1, Attempt: 1},
			events.Event{Type: events.StepStarted, Pos: 1, Attempt: 2},
			events.Event{Type: events.RunParked, Key: "nondeterminism-1"})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := events.Vet(tc.h)
			if &got[0] != &tc.h[0] || len(got) != len(tc.h) {
				t.Fatalf("Vet changed a good history: %+v", got)
			}
			if s := events.Summarize(tc.h); s.DamagedMessages != 0 || s.Status == events.StatusDamaged {
				t.Fatalf("summary reports damage: %+v", s)
			}
		})
	}
}

func TestVetFindsEventsOutOfPlace(t *testing.T) {
	start := events.Event{Type: events.RunStarted, Attrs: map[string]string{"workflow": "w"}}
	copyOf := events.Event{Type: events.StepStarted, Pos: 1, Digest: "same"}
	cases := []struct {
		name    string
		h       []events.Event
		seq     uint64
		because string
	}{
		{"first event is not run_started", hist(events.Event{Type: events.StepCompleted, Pos: 1}, events.Event{Type: events.Annotation}), 1, "first event is run_started"},
		{"second run_started", hist(start, events.Event{Type: events.StepStarted, Pos: 1}, start), 3, "second run_started (the run started at seq 1)"},
		{"copy of an earlier message", hist(start, copyOf, events.Event{Type: events.StepStarted, Pos: 2}, copyOf), 4, "copy of the message at seq 2"},
		{"position skips ahead", hist(start, events.Event{Type: events.StepStarted, Pos: 1}, events.Event{Type: events.StepCompleted, Pos: 42, Name: "x"}), 3, "position 42, but the run's last position is 1"},
		{"prior skips ahead", hist(start, events.Event{Type: events.StepStarted, Pos: 2, Prior: []events.Event{{Type: events.StepCompleted, Pos: 7}}}), 2, "position 7"},
		{"old attempt's positions do not count", hist(start, events.Event{Type: events.StepStarted, Pos: 1}, events.Event{Type: events.StepStarted, Pos: 2}, events.Event{Type: events.RunRetry}, events.Event{Type: events.StepStarted, Pos: 3}), 5, "position 3, but the run's last position is 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := events.Vet(tc.h)
			ds, total := events.Damages(got)
			if total != 1 || ds[0].Seq != tc.seq || ds[0].Code != string(events.CodeOutOfPlace) || !strings.Contains(ds[0].Reason, tc.because) {
				t.Fatalf("want one EVENT_OUT_OF_PLACE at seq %d (%q), got %d: %+v", tc.seq, tc.because, total, ds)
			}
			if ds[0].Found == "" || ds[0].Stream != protocol.RunsStreamOf("r") {
				t.Fatalf("damage lacks what was found or where: %+v", ds[0])
			}
			if events.Summarize(tc.h).Status != events.StatusDamaged {
				t.Fatal("summary is not damaged")
			}
		})
	}
}

func TestVetIsOffForPositionsAfterAnUnreadableMessage(t *testing.T) {
	h := hist(events.Event{Type: events.RunStarted}, events.Event{Type: events.StepStarted, Pos: 1})
	h = append(h, events.ReadMessage("default", "r", events.StoredMsg{Seq: 3, Data: []byte("junk")})...)
	h = append(h, events.Event{Type: events.StepStarted, Pos: 3, RunID: "r", Seq: 4, Digest: "x"})
	if _, total := events.Damages(events.Vet(h)); total != 1 {
		t.Fatalf("a position after unreadable bytes is not evidence: want 1 damaged message, got %d", total)
	}
}

func TestSummarizeDamagedRun(t *testing.T) {
	const run = "run_d"
	start := events.Event{Type: events.RunStarted, RunID: run, Seq: 1, Digest: "a", Attrs: map[string]string{"workflow": "w"}}
	waiting := events.Event{Type: events.Suspended, RunID: run, Pos: 1, Key: "k", Seq: 2, Digest: "b"}
	junk := events.ReadMessage("default", run, events.StoredMsg{Stream: protocol.RunsStreamOf(run), Subject: protocol.RunSubject("default", run, "resumed"), Seq: 9, Data: []byte{'P', 1, 0x82, 0xa1}})
	cancel := []events.Event{{Type: events.CancelRequest, RunID: run, Seq: 10, Digest: "c"}, {Type: events.RunCancelled, RunID: run, Seq: 11, Digest: "d"}}

	s := events.Summarize(append([]events.Event{start, waiting}, junk...))
	if s.Status != events.StatusDamaged || len(s.Waiting) != 0 || s.DamagedMessages != 1 || s.Damage[0].Seq != 9 || s.LastSeq != 9 || s.Agent != "w" {
		t.Fatalf("summary %+v", s)
	}
	msg := s.Error.Message
	for _, want := range []string{"[POLOS-RUN_DAMAGED]", "seq 9", protocol.RunsStreamOf(run), "partition", "4 bytes starting 500182a1", "EVENT_TRUNCATED",
		"polos history " + run + " --raw", "polos cancel " + run} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if s.Error.Code != string(events.CodeRunDamaged) {
		t.Errorf("error code %s", s.Error.Code)
	}

	s = events.Summarize(append(append([]events.Event{start, waiting}, junk...), cancel...))
	if s.Status != events.StatusCancelled || s.DamagedMessages != 1 || s.Error != nil {
		t.Fatalf("a cancelled damaged run: %+v", s)
	}
	s = events.Summarize(junk)
	if s.Status != events.StatusDamaged || s.ID != run {
		t.Fatalf("a run whose only message is unreadable: %+v", s)
	}
}

// TestStoreAppendsAfterUnreadableBytesOnlyWhenNamed: Load reports garbage
// at its sequence; an append expecting the last readable event is refused
// as damage (it would land after bytes nobody read); a signal, which reads
// the whole history first, lands after them.
func TestStoreAppendsAfterUnreadableBytesOnlyWhenNamed(t *testing.T) {
	st, srv := newStore(t, "w")
	ctx := context.Background()
	const run = "run_g"
	start := &events.Event{Type: events.RunStarted, Attrs: map[string]string{"workflow": "w"}}
	_, err := st.Append(ctx, run, events.Tip{}, start)
	if err != nil {
		t.Fatal(err)
	}
	garbage := []byte("\x00not an event\xff")
	ack, err := srv.JS.Publish(ctx, st.Subject(run, events.StepCompleted), garbage)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := st.Load(ctx, run, 0)
	if err != nil {
		t.Fatalf("Load must report garbage, not fail: %v", err)
	}
	if len(hist) != 2 || hist[1].Type != events.Unreadable || hist[1].Seq != ack.Sequence {
		t.Fatalf("history %+v", hist)
	}
	if d, _ := events.DamageOf(hist[1]); d.Subject != st.Subject(run, events.StepCompleted) || d.Code != string(events.CodeGarbage) || d.StoredAt.IsZero() {
		t.Fatalf("damage %+v", d)
	}

	_, err = st.Append(ctx, run, events.TipOfEvent(start), &events.Event{Type: events.StepStarted, Pos: 1})
	var c *events.ConflictError
	if !errors.As(err, &c) || c.Code != events.CodeRunDamaged || !strings.Contains(err.Error(), "unreadable message at seq") {
		t.Fatalf("append over garbage: want RUN_DAMAGED, got %v", err)
	}

	cseq, hist2, err := st.AppendSignal(ctx, run, &events.Event{Type: events.CancelRequest}, nil)
	if err != nil || cseq != ack.Sequence+1 || hist2[len(hist2)-1].Type != events.CancelRequest {
		t.Fatalf("signal after garbage: seq %d, %v", cseq, err)
	}
	raw, err := st.RawHistory(ctx, run)
	if err != nil || len(raw) != 3 || !bytes.Equal(raw[1].Data, garbage) || raw[1].Seq != ack.Sequence {
		t.Fatalf("raw history %+v %v", raw, err)
	}
}

// TestLoadOrderedCountsMessagesNotEvents: a long history whose messages
// carry priors (more events than messages) is read to its end. Counting
// expanded events against the consumer's pending messages stopped early.
func TestLoadOrderedCountsMessagesNotEvents(t *testing.T) {
	st, _ := newStore(t, "w")
	ctx := context.Background()
	var tip events.Tip
	const msgs = events.DefaultReadBatch + 100
	for i := 0; i < msgs; i++ {
		ev := &events.Event{Type: events.StepStarted, Pos: 2*i + 2, Prior: []events.Event{{Type: events.StepCompleted, Pos: 2*i + 1}}}
		if _, err := st.Append(ctx, "r", tip, ev); err != nil {
			t.Fatal(err)
		}
		tip = events.TipOfEvent(ev)
	}
	seq := tip.Seq
	for name, load := range map[string]func() ([]events.Event, error){
		"Load":        func() ([]events.Event, error) { return st.Load(ctx, "r", 0) },
		"LoadOrdered": func() ([]events.Event, error) { return st.LoadOrdered(ctx, "r", 0) },
	} {
		t.Run(name, func(t *testing.T) {
			got, err := load()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2*msgs || got[len(got)-1].Seq != seq {
				t.Fatalf("%d events ending at seq %d, want %d ending at %d", len(got), got[len(got)-1].Seq, 2*msgs, seq)
			}
		})
	}
}
