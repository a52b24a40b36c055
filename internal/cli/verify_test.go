package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/internal/app"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
)

// writeRun appends evs as one run's history and indexes its summary, as an
// executor does; it returns the history's tip.
func writeRun(t *testing.T, st *events.Store, js jetstream.JetStream, id string, evs ...*events.Event) events.Tip {
	t.Helper()
	ctx := context.Background()
	var tip events.Tip
	var hist []events.Event
	for _, ev := range evs {
		if _, err := st.Append(ctx, id, tip, ev); err != nil {
			t.Fatal(err)
		}
		tip = events.TipOfEvent(ev)
		hist = append(hist, events.Expand(*ev)...)
	}
	sum := events.Summarize(hist)
	sum.Namespace = "default"
	if err := index.Put(ctx, js, sum); err != nil {
		t.Fatal(err)
	}
	return tip
}

// TestVerifyFindsDamagedFiles: a completed run whose last message is cut
// off the block file while the server is stopped, and a run with a
// well-formed event whose link was forged (published raw with a correct
// compare-and-swap): polosd's start check logs the stream's loss once,
// `polos verify --all` exits 1 naming exactly these two runs, where and
// what, `polos status` shows the completed run as damaged (not running),
// and a healthy run verifies.
func TestVerifyFindsDamagedFiles(t *testing.T) {
	dir := t.TempDir()
	srv := testutil.StartServerIn(t, dir)
	ctx := context.Background()
	st, err := events.NewStore(srv.NC, srv.JS, "default", "exec-1")
	if err != nil {
		t.Fatal(err)
	}
	start := func() *events.Event {
		return &events.Event{Type: events.RunStarted, Attrs: map[string]string{"workflow": "w", "queue": "w"}}
	}
	const okRun, forgedRun, doneRun = "run_ok", "run_forged", "run_done"
	writeRun(t, st, srv.JS, okRun, start(), &events.Event{Type: events.StepStarted, Pos: 1, Name: "s"}, &events.Event{Type: events.RunCompleted, Data: []byte(`1`)})
	tip := writeRun(t, st, srv.JS, forgedRun, start(), &events.Event{Type: events.StepStarted, Pos: 1, Name: "s"})
	forged := events.Event{Type: events.StepStarted, RunID: forgedRun, Pos: 2, Name: "t", Writer: "exec-1", PrevSeq: tip.Seq, Prev: strings.Repeat("0", 32)}
	b, _ := events.Encode(&forged)
	ack, err := srv.JS.PublishMsg(ctx, &nats.Msg{Subject: st.Subject(forgedRun, forged.Type), Data: b}, jetstream.WithExpectLastSequenceForSubject(tip.Seq, st.RunFilter(forgedRun)))
	if err != nil {
		t.Fatal(err)
	}
	// Written last, so its run_completed is the last message of its stream.
	doneTip := writeRun(t, st, srv.JS, doneRun, start(), &events.Event{Type: events.StepStarted, Pos: 1, Name: "s"},
		&events.Event{Type: events.RunCompleted, Data: []byte(`"done"`), Prior: []events.Event{{Type: events.StepCompleted, Pos: 1, Name: "s"}}})
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		s, found, err := index.Get(ctx, st.Reader(), "default", doneRun)
		if err != nil || !found || s.LastSeq != doneTip.Seq {
			return fmt.Errorf("index entry %+v found %v: %v", s, found, err)
		}
		return nil
	})
	stream := protocol.RunsStreamOf(doneRun)
	srv.Stop()
	blk := testutil.LastBlock(t, dir, stream)
	testutil.TruncateFile(t, blk, 20) // into the last message
	srv = testutil.StartServerIn(t, dir)

	var logs bytes.Buffer
	if n := app.LogStreamLosses(ctx, srv.JS, slog.New(slog.NewTextHandler(&logs, nil))); n != 1 {
		t.Fatalf("%d streams reported lost messages, want 1: %s", n, logs.String())
	}
	line := logs.String()
	if strings.Count(line, "level=ERROR") != 1 || !strings.Contains(line, stream) || !strings.Contains(line, "at seq "+strconv.FormatUint(doneTip.Seq, 10)) || !strings.Contains(line, "polos verify --all") {
		t.Fatalf("want one ERROR line naming %s, seq %d and polos verify --all, got:\n%s", stream, doneTip.Seq, line)
	}

	cli := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Main(append(append([]string{"polos"}, args...), "--server", srv.ClientURL(), "--creds", srv.CredsFile("operator")), IO{Out: &out, Err: &errb})
		return code, out.String() + errb.String()
	}
	code, out := cli("verify", "--all", "-o", "json")
	if code != ExitRunFailed {
		t.Fatalf("verify --all exit %d, want 1: %s", code, out)
	}
	var r client.VerifyReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	byRun := map[string]client.Problem{}
	for _, p := range r.Problems {
		byRun[p.Run] = p
	}
	if len(r.Problems) != 2 || r.Runs != 3 {
		t.Fatalf("want 2 problems in 3 runs, got %d in %d: %s", len(r.Problems), r.Runs, out)
	}
	if p := byRun[doneRun]; p.Code != string(events.CodeHistoryBroken) || p.Seq != doneTip.Seq || p.Digest != doneTip.Digest || !strings.Contains(p.Reason, "says completed") {
		t.Fatalf("truncated run: %+v", p)
	}
	if p := byRun[forgedRun]; p.Code != string(events.CodeHistoryBroken) || p.Seq != ack.Sequence || p.Chain == nil ||
		p.Chain.NamedDigest != forged.Prev || p.Chain.HistoryDigest != tip.Digest || p.Chain.HistorySeq != tip.Seq {
		t.Fatalf("forged link: %+v", p)
	}
	if len(r.Lost) != 1 || r.Lost[0].Stream != stream || len(r.Lost[0].Seqs) != 1 || r.Lost[0].Seqs[0] != doneTip.Seq {
		t.Fatalf("lost: %+v", r.Lost)
	}

	code, out = cli("verify", doneRun)
	if code != ExitRunFailed || !strings.Contains(out, "BROKEN run "+doneRun) || !strings.Contains(out, "LOST stream "+stream) {
		t.Fatalf("verify %s: exit %d\n%s", doneRun, code, out)
	}
	code, out = cli("verify", forgedRun)
	if code != ExitRunFailed || !strings.Contains(out, "expected prev: seq "+strconv.FormatUint(tip.Seq, 10)+" digest "+tip.Digest) || !strings.Contains(out, "found prev:    seq "+strconv.FormatUint(tip.Seq, 10)+" digest "+forged.Prev) {
		t.Fatalf("verify %s: exit %d\n%s", forgedRun, code, out)
	}
	if code, out = cli("verify", okRun); code != ExitOK || !strings.Contains(out, "ok: 1 run(s)") {
		t.Fatalf("verify %s: exit %d\n%s", okRun, code, out)
	}
	code, out = cli("status", doneRun, "-o", "json")
	var sum events.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Status != events.StatusDamaged || len(sum.Damage) != 1 || sum.Damage[0].Code != string(events.CodeHistoryBroken) {
		t.Fatalf("status of the truncated completed run: exit %d %v\n%s", code, err, out)
	}
}

// TestVerifyFindsAFlippedByte: a byte flipped inside a middle message of a
// run's history (found in the block file by its stored bytes) makes the
// server fail that message's checksum and skip it; verify --all reports
// exactly that sequence as a message the stream cannot return, and the
// run's chain breaks at the next message, naming the lost one.
func TestVerifyFindsAFlippedByte(t *testing.T) {
	dir := t.TempDir()
	srv := testutil.StartServerIn(t, dir)
	ctx := context.Background()
	st, _ := events.NewStore(srv.NC, srv.JS, "default", "exec-1")
	const id = "run_flip"
	evs := []*events.Event{{Type: events.RunStarted, Attrs: map[string]string{"workflow": "w", "queue": "w"}}}
	for p := 1; p <= 4; p++ {
		evs = append(evs, &events.Event{Type: events.StepStarted, Pos: p, Name: "s"})
	}
	writeRun(t, st, srv.JS, id, evs...)
	victim, next := evs[2], evs[3]
	raw, err := st.RawHistory(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var stored []byte
	for _, m := range raw {
		if m.Seq == victim.Seq {
			stored = m.Data
		}
	}
	stream := protocol.RunsStreamOf(id)
	srv.Stop()
	blk := testutil.LastBlock(t, dir, stream)
	file, err := os.ReadFile(blk)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(file, stored)
	if at < 0 || len(stored) == 0 {
		t.Fatalf("message at seq %d not found in %s", victim.Seq, blk)
	}
	testutil.FlipByte(t, blk, int64(at+len(stored)/2))
	srv = testutil.StartServerIn(t, dir)

	var out bytes.Buffer
	code := Main([]string{"polos", "verify", "--all", "-o", "json", "--server", srv.ClientURL(), "--creds", srv.CredsFile("operator")}, IO{Out: &out, Err: &out})
	var r client.VerifyReport
	if err := json.Unmarshal(out.Bytes(), &r); code != ExitRunFailed || err != nil {
		t.Fatalf("exit %d %v: %s", code, err, out.String())
	}
	if r.Unreadable[stream] != 1 || len(r.Problems) != 2 {
		t.Fatalf("want 1 unreadable message and 2 problems: %s", out.String())
	}
	var chainBreak *client.Problem
	for i, p := range r.Problems {
		switch p.Run {
		case "?":
			if p.Seq != victim.Seq || p.Stream != stream {
				t.Fatalf("unreadable message reported at %d of %s, want %d: %+v", p.Seq, p.Stream, victim.Seq, p)
			}
		case id:
			chainBreak = &r.Problems[i]
		}
	}
	if chainBreak == nil || chainBreak.Seq != next.Seq || chainBreak.Chain == nil || chainBreak.Chain.NamedSeq != victim.Seq ||
		chainBreak.Chain.NamedDigest != victim.Digest || chainBreak.Chain.HistorySeq != evs[1].Seq || !strings.Contains(chainBreak.Reason, "a gap") {
		t.Fatalf("want the chain to break at seq %d naming seq %d (%s): %+v", next.Seq, victim.Seq, victim.Digest, chainBreak)
	}
}
