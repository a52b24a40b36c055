package cli

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos/events"
)

// DefaultRawDumpBytes is how many bytes of each message `polos history
// --raw` dumps in text output (JSON output has them all).
const DefaultRawDumpBytes = 256

// rawMessage is one stored message in `polos history --raw -o json`.
type rawMessage struct {
	Seq      uint64         `json:"seq"`
	Stream   string         `json:"stream"`
	Subject  string         `json:"subject"`
	StoredAt time.Time      `json:"stored_at"`
	Size     int            `json:"size"`
	Readable bool           `json:"readable"`
	Events   []events.Event `json:"events,omitempty"` // what it holds, when readable
	Damage   *events.Damage `json:"damage,omitempty"` // what is wrong, when not
	Data     []byte         `json:"data"`             // the stored bytes (base64)
}

// rawHistory prints every stored message of the run as it is: where it is,
// its bytes, and whether (and why not) it can be read.
func (ss *session) rawHistory(id string) error {
	raw, err := ss.cl.RawHistory(ss.c.Context, id)
	if err != nil {
		return err
	}
	var all []events.Event
	bySeq := map[uint64][]events.Event{}
	for _, m := range raw {
		evs := events.ReadMessage(ss.cl.Namespace(), id, m)
		all = append(all, evs...)
	}
	for _, e := range events.Vet(all) { // what only the history around a message shows
		bySeq[e.Seq] = append(bySeq[e.Seq], e)
	}
	for _, m := range raw {
		r := rawMessage{Seq: m.Seq, Stream: m.Stream, Subject: m.Subject, StoredAt: m.Time, Size: len(m.Data), Data: m.Data, Readable: true, Events: bySeq[m.Seq]}
		if len(r.Events) == 1 {
			if d, ok := events.DamageOf(r.Events[0]); ok {
				r.Readable, r.Events, r.Damage = false, nil, &d
			}
		}
		if !ss.out.text() {
			ss.out.JSON(r)
			continue
		}
		ss.printRaw(r)
	}
	return nil
}

func (ss *session) printRaw(r rawMessage) {
	var what any
	if r.Readable {
		var types []string
		for _, e := range r.Events {
			types = append(types, string(e.Type))
		}
		what = strings.Join(types, " + ")
	} else {
		what = ss.out.style(styleRed, "UNREADABLE "+r.Damage.Reason)
	}
	ss.out.Line("seq %d  %s  %s  %d bytes  %s", r.Seq, r.StoredAt.Local().Format(time.DateTime), r.Subject, r.Size, what)
	dump := hex.Dump(r.Data[:min(len(r.Data), DefaultRawDumpBytes)])
	for _, l := range strings.Split(strings.TrimRight(dump, "\n"), "\n") {
		if l != "" {
			ss.out.Line("    %s", l)
		}
	}
	if n := len(r.Data) - DefaultRawDumpBytes; n > 0 {
		ss.out.Line("    ... %d more bytes (-o json prints them all)", n)
	}
}

// indexCommand is `polos index rebuild`.
func indexCommand(s IO) *cli.Command {
	return &cli.Command{
		Name:  "index",
		Usage: "the run index behind `polos list` (derived from the run histories)",
		Subcommands: []*cli.Command{withCommon(&cli.Command{
			Name:      "rebuild",
			Usage:     "recompute every run's index entry from its history (fixes unreadable or stale entries; safe while polosd runs)",
			UsageText: "polos index rebuild [-o text|json|jsonl]",
			Action: action(s, 0, func(ss *session) error {
				ss.out.Spin("rebuilding the run index")
				r, err := ss.cl.RebuildIndex(ss.c.Context)
				ss.out.StopSpin()
				if err != nil {
					return err
				}
				if ss.out.text() {
					ss.out.Line("%s", r)
				} else {
					ss.out.JSON(r)
				}
				return nil
			}),
		})},
	}
}

// printDamage prints a damaged run's unreadable messages and the way out.
func (p *printer) printDamage(s events.Summary) {
	for _, d := range s.Damage {
		p.Line("  damaged:  %s", p.style(styleRed, d.String()))
	}
	if n := s.DamagedMessages - len(s.Damage); n > 0 {
		p.Line("            and %d more unreadable messages", n)
	}
	if len(s.Damage) > 0 {
		p.Line("  inspect:  %s", p.style(styleDim, fmt.Sprintf("polos history %s --raw", s.ID)))
		if !events.IsFinal(s.Status) {
			p.Line("  way out:  %s", p.style(styleDim, fmt.Sprintf("restore stream %s from a backup, or `polos cancel %s` (cancelled without running its code)", s.Damage[0].Stream, s.ID)))
		}
	}
}
