package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
)

// session is what every command action gets: a connected client and a
// printer. run opens it, calls fn and closes it.
type session struct {
	c   *cli.Context
	cl  *client.Client
	out *printer
	io  IO
}

func action(s IO, args int, fn func(ss *session) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if args >= 0 && c.NArg() != args {
			return usageErr("%s takes %d argument(s), got %d (usage: %s)", c.Command.Name, args, c.NArg(), c.Command.UsageText)
		}
		format, err := outputOf(c)
		if err != nil {
			return err
		}
		cl, err := connect(c)
		if err != nil {
			return err
		}
		defer cl.Close()
		ss := &session{c: c, cl: cl, out: newPrinter(s, format), io: s}
		defer ss.out.StopSpin()
		return fn(ss)
	}
}

func statusCommand(s IO) *cli.Command {
	return withCommon(&cli.Command{
		Name:      "status",
		Usage:     "show a run's state, result or error, and what it waits for",
		UsageText: "polos status <run> [-o text|json|jsonl]",
		Action: action(s, 1, func(ss *session) error {
			sum, err := ss.cl.Status(ss.c.Context, ss.c.Args().First())
			if err != nil {
				return err
			}
			ss.printSummary(sum)
			return nil
		}),
	})
}

func (ss *session) printSummary(sum events.Summary) {
	if ss.out.text() {
		ss.out.Summary(sum)
	} else {
		ss.out.JSON(sum)
	}
}

// runExit is the exit code a finished (or damaged) run gives: 1 unless it
// completed.
func runExit(sum events.Summary) error {
	if sum.Status == events.StatusFailed || sum.Status == events.StatusCancelled || sum.Status == events.StatusDamaged {
		return &quietExit{code: ExitRunFailed}
	}
	return nil
}

func resultCommand(s IO) *cli.Command {
	return withCommon(&cli.Command{
		Name:      "result",
		Usage:     "wait for a run to end and print its result (exit 1 if it failed)",
		UsageText: "polos result <run> [--timeout D] [-o text|json|jsonl]",
		Flags:     []cli.Flag{&cli.DurationFlag{Name: "timeout", Usage: "give up after this long (0: wait forever)"}},
		Action: action(s, 1, func(ss *session) error {
			ctx := ss.c.Context
			if d := ss.c.Duration("timeout"); d > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			id := ss.c.Args().First()
			if _, err := ss.cl.Status(ss.c.Context, id); err != nil {
				return err
			}
			ss.out.Spin("waiting for run " + id)
			sum, err := ss.cl.Result(ctx, id)
			ss.out.StopSpin()
			if err != nil {
				return err
			}
			switch {
			case !ss.out.text():
				ss.out.JSON(sum)
			case sum.Status == events.StatusCompleted:
				ss.out.Text(pretty(sum.Result))
			default:
				ss.out.Summary(sum)
			}
			return runExit(sum)
		}),
	})
}

func listCommand(s IO) *cli.Command {
	return withCommon(&cli.Command{
		Name:      "list",
		Usage:     "list runs, newest first",
		UsageText: "polos list [--status running|waiting|completed|failed|cancelled|damaged] [--agent A] [--stuck] [--limit N] [-o text|json|jsonl]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "stuck", Usage: "only running runs that no live executor can serve, and why"},
			&cli.StringFlag{Name: "status", Usage: "only runs with this status"},
			&cli.StringFlag{Name: "agent", Usage: "only runs of this agent or workflow"},
			&cli.IntFlag{Name: "limit", Usage: "at most this many runs", Value: 50},
		},
		Action: action(s, 0, func(ss *session) error {
			st := ss.c.String("status")
			switch st {
			case "", events.StatusRunning, events.StatusWaiting, events.StatusCompleted, events.StatusFailed, events.StatusCancelled, events.StatusDamaged:
			default:
				return usageErr("unknown status %q (use running, waiting, completed, failed, cancelled or damaged)", st)
			}
			listing, err := ss.cl.ListRuns(ss.c.Context, client.ListFilter{Status: st, Agent: ss.c.String("agent"), Limit: ss.c.Int("limit"), Stuck: ss.c.Bool("stuck")})
			if err != nil {
				return err
			}
			// On stderr, so the listing on stdout keeps its shape.
			if p := listing.Problem(); p != "" {
				fmt.Fprintln(ss.io.Err, "polos: warning:", p)
			}
			runs := listing.Runs
			switch ss.out.format {
			case OutJSON:
				if runs == nil {
					runs = []events.Summary{}
				}
				ss.out.JSON(runs)
			case OutJSONL:
				for _, r := range runs {
					ss.out.JSON(r)
				}
			default:
				if len(runs) == 0 {
					ss.out.Line("no runs")
					return nil
				}
				ss.out.Line("%-32s %-10s %-24s %s", "ID", "STATUS", "AGENT", "UPDATED")
				for _, r := range runs {
					var status any = fmt.Sprintf("%-10s", r.Status)
					if r.Status == events.StatusDamaged {
						status = ss.out.style(styleRed, fmt.Sprintf("%-10s", r.Status))
					}
					ss.out.Line("%-32s %s %-24s %s", r.ID, status, r.Agent, r.UpdatedAt.Local().Format(time.DateTime))
					if r.Stuck != "" {
						ss.out.Line("  stuck: %s", r.Stuck)
					}
				}
			}
			return nil
		}),
	})
}

func cancelCommand(s IO) *cli.Command {
	return withCommon(&cli.Command{
		Name:      "cancel",
		Usage:     "cancel a run (exit 4 if it already ended)",
		UsageText: "polos cancel <run> [-o text|json|jsonl]",
		Action: action(s, 1, func(ss *session) error {
			id := ss.c.Args().First()
			if err := ss.cl.Cancel(ss.c.Context, id); err != nil {
				return err
			}
			if ss.out.text() {
				ss.out.Line("cancel requested for %s", id)
			} else {
				ss.out.JSON(map[string]any{"id": id, "cancel_requested": true})
			}
			return nil
		}),
	})
}

func historyCommand(s IO) *cli.Command {
	return withCommon(&cli.Command{
		Name:      "history",
		Usage:     "export a run's events (json: an array, for golden replay tests); --raw: the stored messages as they are",
		UsageText: "polos history <run> [--raw] [-o text|json|jsonl]",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "raw", Usage: "every stored message with its subject, size and bytes, readable or not"}},
		Action: action(s, 1, func(ss *session) error {
			if ss.c.Bool("raw") {
				return ss.rawHistory(ss.c.Args().First())
			}
			hist, err := ss.cl.History(ss.c.Context, ss.c.Args().First(), 0)
			if err != nil {
				return err
			}
			switch ss.out.format {
			case OutJSON:
				ss.out.JSON(hist)
			case OutJSONL:
				for _, e := range hist {
					ss.out.JSON(e)
				}
			default:
				for _, e := range hist {
					ss.out.Event(e, false)
				}
				ss.out.StopSpin()
			}
			return nil
		}),
	})
}

func tailCommand(s IO) *cli.Command {
	return withCommon(&cli.Command{
		Name:  "tail",
		Usage: "print a run's events (or every run's with --all), resumable with --from-seq (--from-cursor with --all)",
		UsageText: "polos tail <run> [--from-seq N] [--follow] [-o text|json|jsonl]\n" +
			"polos tail --all [--from-cursor C] [--follow]",
		Flags: []cli.Flag{
			&cli.Uint64Flag{Name: "from-seq", Usage: "print events with a sequence above N (the last one you saw)"},
			&cli.StringFlag{Name: "from-cursor", Usage: "with --all: print events after cursor C (printed with every event of --all)"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new events (a run's tail ends with the run)"},
			&cli.BoolFlag{Name: "all", Usage: "every run of the namespace"},
		},
		Action: action(s, -1, func(ss *session) error {
			all := ss.c.Bool("all")
			if all && ss.c.NArg() != 0 || !all && ss.c.NArg() != 1 {
				return usageErr("give a run ID or --all (usage: polos tail <run> [--from-seq N] [--follow])")
			}
			if all {
				if ss.c.IsSet("from-seq") {
					return usageErr("with --all, resume with --from-cursor C (runs live in several streams, so one sequence is not a position); the cursor is printed with every event")
				}
				var from client.Cursor
				if v := ss.c.String("from-cursor"); v != "" {
					var err error
					if from, err = client.ParseCursor(v); err != nil {
						return err
					}
				}
				return ss.tailAll(from, ss.c.Bool("follow"))
			}
			if ss.c.IsSet("from-cursor") {
				return usageErr("--from-cursor goes with --all; for one run use --from-seq N")
			}
			id := ss.c.Args().First()
			if _, err := ss.cl.Status(ss.c.Context, id); err != nil {
				return err
			}
			return ss.tail(id, ss.c.Uint64("from-seq"), ss.c.Bool("follow"))
		}),
	})
}

// tail prints events of run id after from. Without follow it stops once it
// has caught up with the run.
func (ss *session) tail(id string, from uint64, follow bool) error {
	ctx, cancel := context.WithCancel(ss.c.Context)
	defer cancel()
	var upTo uint64
	if !follow {
		last, err := ss.cl.Store().LastSeq(ctx, id)
		if err != nil {
			return err
		}
		if last <= from {
			return nil
		}
		upTo = last
	}
	return ss.cl.Follow(ctx, id, from, func(e events.Event) error {
		if ss.out.text() {
			ss.out.Event(e, false)
		} else {
			ss.out.JSON(e)
		}
		if e.Type.IsTerminal() || (upTo > 0 && e.Seq >= upTo) {
			return client.ErrStop
		}
		return nil
	})
}

// tailAll prints events of every run after from. Without follow it stops
// once it has caught up with every partition.
func (ss *session) tailAll(from client.Cursor, follow bool) error {
	ctx, cancel := context.WithCancel(ss.c.Context)
	defer cancel()
	var upTo client.Cursor
	if !follow {
		var err error
		if upTo, err = ss.cl.LastCursor(ctx); err != nil {
			return err
		}
		if reached(from, upTo) {
			return nil
		}
	}
	return ss.cl.FollowAll(ctx, client.FollowOptions{From: from}, func(e events.Event, cur client.Cursor) error {
		if ss.out.text() {
			ss.out.Event(e, true)
		} else {
			ss.out.JSON(e)
		}
		if !follow && reached(cur, upTo) {
			return client.ErrStop
		}
		return nil
	})
}

// reached reports whether cursor cur is at or past upTo in every partition.
func reached(cur, upTo client.Cursor) bool {
	for p := range cur {
		if cur[p] < upTo[p] {
			return false
		}
	}
	return true
}
