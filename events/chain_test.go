package events_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
)

func TestCheckLink(t *testing.T) {
	ev := func(seq, prevSeq uint64, prev string) events.Event {
		return events.Event{Type: events.StepStarted, Seq: seq, PrevSeq: prevSeq, Prev: prev}
	}
	cases := []struct {
		name    string
		prev    events.Tip
		chained bool
		own     events.Event
		want    string // "" = the link holds
	}{
		{"first message names none", events.Tip{}, false, ev(1, 0, ""), ""},
		{"first message names one", events.Tip{}, false, ev(1, 7, "abc"), "first message names a predecessor (seq 7"},
		{"link holds", events.Tip{Seq: 4, Digest: "d4"}, true, ev(9, 4, "d4"), ""},
		{"first link of a history", events.Tip{Seq: 1, Digest: "d1"}, false, ev(2, 1, "d1"), ""},
		{"unchained history", events.Tip{Seq: 4, Digest: "d4"}, false, ev(9, 0, ""), ""},
		{"unchained after chained", events.Tip{Seq: 4, Digest: "d4"}, true, ev(9, 0, ""), "carries no link after chained ones (the message before it is seq 4"},
		{"gap", events.Tip{Seq: 4, Digest: "d4"}, true, ev(9, 6, "d6"), "a gap: the message follows seq 6 (digest d6), the history holds seq 4 (digest d4) before it: the run's messages after seq 4 up to seq 6 are missing"},
		{"reordered", events.Tip{Seq: 6, Digest: "d6"}, true, ev(9, 4, "d4"), "follows seq 4 (digest d4), but seq 6 (digest d6) stands before it"},
		{"changed predecessor", events.Tip{Seq: 4, Digest: "d4x"}, true, ev(9, 4, "d4"), "follows seq 4 with digest d4, the message at seq 4 has digest d4x: it was changed or replaced"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := events.CheckLink(tc.prev, tc.chained, tc.own)
			switch {
			case tc.want == "" && b != nil:
				t.Fatalf("link refused: %+v", b)
			case tc.want != "" && b == nil:
				t.Fatal("link accepted")
			case tc.want != "" && !strings.Contains(b.Reason, tc.want):
				t.Fatalf("reason %q, want it to contain %q", b.Reason, tc.want)
			case b != nil && (b.Seq != tc.own.Seq || b.NamedSeq != tc.own.PrevSeq || b.NamedDigest != tc.own.Prev || b.HistorySeq != tc.prev.Seq || b.HistoryDigest != tc.prev.Digest):
				t.Fatalf("break does not say where: %+v", b)
			}
		})
	}
}

func TestCheckIndex(t *testing.T) {
	hv := func(seq uint64, digest string, final bool) events.HistoryView {
		return events.HistoryView{Tip: events.Tip{Seq: seq, Digest: digest}, Final: final}
	}
	at := func(v events.HistoryView, digest string) events.HistoryView {
		v.AtDigest, v.AtFound = digest, true
		return v
	}
	cases := []struct {
		name string
		idx  events.IndexView
		h    events.HistoryView
		want string
	}{
		{"agree", events.IndexView{Status: events.StatusCompleted, LastSeq: 9, LastDigest: "d9"}, at(hv(9, "d9", true), "d9"), ""},
		{"history ahead of the index", events.IndexView{Status: events.StatusRunning, LastSeq: 5, LastDigest: "d5"}, at(hv(9, "d9", false), "d5"), ""},
		{"entry without a digest", events.IndexView{Status: events.StatusRunning, LastSeq: 5}, hv(9, "d9", false), ""},
		{"completed run reverted", events.IndexView{Status: events.StatusCompleted, LastSeq: 9, LastDigest: "d9"}, hv(7, "d7", false), "the run index says completed at seq 9 (digest d9), the history does not end: it ends at seq 7 (digest d7)"},
		{"lost tail of a running run", events.IndexView{Status: events.StatusWaiting, LastSeq: 9, LastDigest: "d9"}, hv(7, "d7", false), "recorded seq 9 (digest d9, status waiting), the history ends at seq 7"},
		{"recorded message gone", events.IndexView{Status: events.StatusRunning, LastSeq: 5, LastDigest: "d5"}, hv(9, "d9", false), "no message at that sequence"},
		{"sequence reused", events.IndexView{Status: events.StatusRunning, LastSeq: 5, LastDigest: "d5"}, at(hv(9, "d9", false), "e5"), "sequence 5 was reused: the run index recorded digest d5 there, the history holds digest e5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := events.CheckIndex(tc.idx, tc.h)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// chained builds a history of one message per event, linked as
// Store.Append links them.
func chained(msgs ...events.Event) []events.Event {
	var out []events.Event
	var tip events.Tip
	for i, m := range msgs {
		m.RunID, m.Seq = "r", uint64(2*i+1) // other runs' messages in between
		m.Digest = "dg" + string(rune('a'+i))
		m.PrevSeq, m.Prev = tip.Seq, tip.Digest
		tip = events.TipOfEvent(&m)
		out = append(out, events.Expand(m)...)
	}
	return out
}

func TestVetChecksTheChain(t *testing.T) {
	start := events.Event{Type: events.RunStarted, Attrs: map[string]string{"workflow": "w"}}
	step := func(p int) events.Event { return events.Event{Type: events.StepStarted, Pos: p} }
	good := chained(start, step(1), step(2), events.Event{Type: events.RunCompleted, Prior: []events.Event{{Type: events.StepCompleted, Pos: 2}}})
	if got := events.Vet(good); &got[0] != &good[0] {
		t.Fatalf("a chained history is refused: %+v", got)
	}
	old := hist(start, step(1), step(2))
	if _, total := events.Damages(events.Vet(old)); total != 0 {
		t.Fatal("a history written before the chain is damage")
	}
	upgraded := append(hist(start, step(1)), events.Event{Type: events.StepStarted, Pos: 2, RunID: "r", Seq: 3, Digest: "dc", PrevSeq: 2, Prev: "db"}) // old messages, then a chained one
	if _, total := events.Damages(events.Vet(upgraded)); total != 0 {
		t.Fatalf("a run continued by a chained writer is damage: %+v", events.Vet(upgraded))
	}

	cases := []struct {
		name    string
		h       func() []events.Event
		seq     uint64
		because string
	}{
		{"changed message", func() []events.Event { h := chained(start, step(1), step(2)); h[1].Digest = "changed"; return h }, 5, "the message at seq 3 has digest changed"},
		{"lost message", func() []events.Event { h := chained(start, step(1), step(2), step(3)); return append(h[:2], h[3]) }, 7, "a gap: the message follows seq 5"},
		{"reordered", func() []events.Event {
			h := chained(start, step(1), step(2), step(3))
			h[2], h[3] = h[3], h[2]
			return h
		}, 7, "follows seq 5"},
		{"unchained after chained", func() []events.Event {
			h := chained(start, step(1), step(2))
			h[2].PrevSeq, h[2].Prev = 0, ""
			return h
		}, 5, "carries no link after chained ones"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ds, total := events.Damages(events.Vet(tc.h()))
			if total < 1 || (total > 1 && tc.name != "reordered") || ds[0].Seq != tc.seq || ds[0].Code != string(events.CodeHistoryBroken) || !strings.Contains(ds[0].Reason, tc.because) {
				t.Fatalf("want one HISTORY_BROKEN at seq %d (%q), got %d: %+v", tc.seq, tc.because, total, ds)
			}
			if ds[0].Chain == nil || ds[0].Chain.Seq != tc.seq || ds[0].Digest == "" {
				t.Fatalf("damage does not say which link broke: %+v", ds[0])
			}
		})
	}

	// Bytes that do not decode break the link to their successor (which
	// names them as they were); that is one damage, not two.
	h := chained(start, step(1), step(2))
	u := events.ReadMessage("default", "r", events.StoredMsg{Seq: h[1].Seq, Data: []byte("P\x01junk")})
	h = append(append(h[:1:1], u...), h[2])
	if ds, total := events.Damages(events.Vet(h)); total != 1 || ds[0].Seq != 3 {
		t.Fatalf("want the undecodable message only, got %+v", ds)
	}
}

// TestEveryWriterChains: single appends, group commit and signals all link
// their events, so a stored history verifies; a well-formed event with a
// wrong link, published raw with a correct compare-and-swap (it decodes
// and stands where it is), is caught by the chain alone.
func TestEveryWriterChains(t *testing.T) {
	st, srv := newStore(t, "w")
	ctx := context.Background()
	const run = "run_chain"
	start := &events.Event{Type: events.RunStarted, Attrs: map[string]string{"workflow": "w"}}
	if _, err := st.Append(ctx, run, events.Tip{}, start); err != nil {
		t.Fatal(err)
	}
	if start.Chained() {
		t.Fatalf("run_started carries a link: %+v", start)
	}
	step := &events.Event{Type: events.StepStarted, Pos: 1, Name: "s"}
	if _, err := st.Append(ctx, run, events.TipOfEvent(start), step); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.AppendSignal(ctx, run, &events.Event{Type: events.CancelRequest}, nil); err != nil {
		t.Fatal(err)
	}
	grouped := st.WithWriter("g")
	grouped.EnableGroupCommit()
	tip, _ := st.TipOf(ctx, run)
	if _, err := grouped.Append(ctx, run, tip, &events.Event{Type: events.StepCompleted, Pos: 1, Name: "s", Prior: []events.Event{{Type: events.Annotation}}}); err != nil {
		t.Fatal(err)
	}
	// A tip without its digest is refused: no writer appends unlinked.
	if _, err := st.Append(ctx, run, events.Tip{Seq: 4}, &events.Event{Type: events.Annotation}); perr.CodeOf(err) != events.CodeBadTip {
		t.Fatalf("append after a bare sequence: %v", err)
	}

	hist, err := st.Load(ctx, run, 0)
	if err != nil {
		t.Fatal(err)
	}
	var prev events.Tip
	msgs := 0
	for i, e := range hist {
		if i > 0 && e.Seq == hist[i-1].Seq {
			continue
		}
		msgs++
		if e.PrevSeq != prev.Seq || e.Prev != prev.Digest {
			t.Fatalf("message at seq %d links to (%d, %s), want (%d, %s)", e.Seq, e.PrevSeq, e.Prev, prev.Seq, prev.Digest)
		}
		prev = events.TipOfEvent(&e)
	}
	if msgs != 4 {
		t.Fatalf("%d messages, want 4", msgs)
	}
	if _, total := events.Damages(events.Vet(hist)); total != 0 {
		t.Fatalf("a history every writer chained has damage: %+v", events.Vet(hist))
	}

	// A replaced event: a well-formed step_completed naming a predecessor
	// digest that is not the tip's, stored with a correct CAS.
	tip = events.TipOf(hist)
	forged := events.Event{Type: events.StepStarted, RunID: run, Pos: 2, Name: "t", Writer: "w", PrevSeq: tip.Seq, Prev: strings.Repeat("0", 32)}
	b, err := events.Encode(&forged)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := srv.JS.PublishMsg(ctx, &nats.Msg{Subject: st.Subject(run, forged.Type), Data: b}, jetstream.WithExpectLastSequenceForSubject(tip.Seq, st.RunFilter(run)))
	if err != nil {
		t.Fatal(err)
	}
	hist, _ = st.Load(ctx, run, 0)
	ds, total := events.Damages(events.Vet(hist))
	if total != 1 || ds[0].Seq != ack.Sequence || ds[0].Code != string(events.CodeHistoryBroken) ||
		ds[0].Chain.NamedDigest != forged.Prev || ds[0].Chain.HistoryDigest != tip.Digest || ds[0].Chain.HistorySeq != tip.Seq {
		t.Fatalf("forged link: want HISTORY_BROKEN at seq %d naming %s where the history has %s, got %d: %+v", ack.Sequence, forged.Prev, tip.Digest, total, ds)
	}
	if s := events.Summarize(hist); s.Status != events.StatusDamaged {
		t.Fatalf("status %s, want damaged", s.Status)
	}
}
