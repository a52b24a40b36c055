package cli

import (
	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/protocol"
)

// verifyCommand is `polos verify [RUN | --all]`.
func verifyCommand(s IO) *cli.Command {
	return withCommon(&cli.Command{
		Name:      "verify",
		Usage:     "check that run histories are whole: every message reads, stands in place and links to the one before it, and holds what the run index recorded (exit 1 listing what is wrong)",
		UsageText: "polos verify <run> | --all [-o text|json|jsonl]",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "all", Usage: "every run of the namespace: walk the run streams and the run index"}},
		Action: action(s, -1, func(ss *session) error {
			all := ss.c.Bool("all")
			if all == (ss.c.NArg() == 1) || ss.c.NArg() > 1 {
				return usageErr("verify takes a run ID or --all (usage: %s)", ss.c.Command.UsageText)
			}
			var r client.VerifyReport
			var err error
			if all {
				ss.out.Spin("verifying every run")
				r, err = ss.cl.VerifyAll(ss.c.Context, nil)
			} else {
				r, err = ss.cl.Verify(ss.c.Context, ss.c.Args().First())
			}
			ss.out.StopSpin()
			if err != nil {
				return err
			}
			ss.printVerify(r)
			if !r.OK() {
				return &quietExit{code: ExitRunFailed}
			}
			return nil
		}),
	})
}

func (ss *session) printVerify(r client.VerifyReport) {
	switch ss.out.format {
	case OutJSON:
		ss.out.JSON(r)
		return
	case OutJSONL:
		for _, p := range r.Problems {
			ss.out.JSON(p)
		}
		for _, l := range r.Lost {
			ss.out.JSON(l)
		}
		return
	}
	for _, l := range r.Lost {
		ss.out.Line("%s %s", ss.out.style(styleRed, "LOST"), lossLine(l))
	}
	for _, p := range r.Problems {
		ss.out.Line("%s run %s, seq %d (%s): [%s] %s", ss.out.style(styleRed, "BROKEN"), p.Run, p.Seq, p.Stream, p.Code, p.Reason)
		if c := p.Chain; c != nil {
			ss.out.Line("    expected prev: seq %d digest %s", c.HistorySeq, orNone(c.HistoryDigest))
			ss.out.Line("    found prev:    seq %d digest %s", c.NamedSeq, orNone(c.NamedDigest))
		}
	}
	var status any = "ok"
	if !r.OK() {
		status = ss.out.style(styleRed, "DAMAGED")
	}
	ss.out.Line("%s: %d run(s), %d message(s), %d problem(s), %d unchained message(s) (written before the chain)", status, r.Runs, r.Messages, len(r.Problems), r.Unchained)
	if !r.OK() {
		ss.out.Line("  inspect:  %s", ss.out.style(styleDim, "polos history <run> --raw"))
		ss.out.Line("  way out:  %s", ss.out.style(styleDim, "restore the stream from a backup, or `polos cancel <run>` for each run that cannot be restored"))
	}
}

func lossLine(l protocol.StreamLoss) string {
	return l.String() + " (nats-server marked them deleted or lost; Polos never deletes from run streams)"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
