package cli

import (
	"github.com/polos-run/polos/replay"

	"time"

	"github.com/polos-run/polos/hitl"

	"bufio"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/textsafe"
	"github.com/polos-run/polos/perr"
)

func runCommand(s IO) *cli.Command {
	return withCommon(&cli.Command{
		Name:  "run",
		Usage: "start a run of an agent or workflow and follow it live (approvals are asked inline on a terminal)",
		UsageText: "polos run <agent-or-workflow> [--input TEXT | --input-file F] [--session ID] [--id ID] [--detach] [-o text|json|jsonl]\n\n" +
			"--input is used as JSON when it parses as JSON, else as a JSON string.\n" +
			"-o json prints the final run; -o jsonl prints every event as it happens.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "input (JSON, or text sent as a JSON string)"},
			&cli.StringFlag{Name: "input-file", Usage: "read the input from a file (- for stdin)"},
			&cli.StringFlag{Name: "session", Usage: "session (conversation) ID carried to the run"},
			&cli.IntFlag{Name: "attempts", Usage: "retry the whole run from the top up to this many attempts after a retryable failure (1s backoff, doubling)"},
			&cli.DurationFlag{Name: "run-timeout", Usage: "fail the run after this much running time (waiting for people, timers and events does not count)"},
			&cli.StringFlag{Name: "id", Usage: "run ID to use (starting an existing ID follows that run)"},
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "print the run ID and exit"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErr("run takes one agent or workflow name (usage: polos run <agent-or-workflow> [--input TEXT])")
			}
			input, err := readInput(c, s.In)
			if err != nil {
				return err
			}
			return action(s, 1, func(ss *session) error {
				id, _, err := ss.cl.Start(c.Context, c.Args().First(), input, startOptions(c))
				if err != nil {
					return err
				}
				if c.Bool("detach") {
					if ss.out.text() {
						ss.out.Line("%s", id)
					} else {
						ss.out.JSON(map[string]string{"id": id})
					}
					return nil
				}
				return ss.follow(id)
			})(c)
		},
	})
}

// readInput returns the run input as raw JSON (nil for none).
func readInput(c *cli.Context, stdin io.Reader) (json.RawMessage, error) {
	text, file := c.String("input"), c.String("input-file")
	if c.IsSet("input") && file != "" {
		return nil, usageErr("give --input or --input-file, not both")
	}
	if file != "" {
		var b []byte
		var err error
		if file == "-" {
			b, err = io.ReadAll(stdin)
		} else {
			b, err = os.ReadFile(file)
		}
		if err != nil {
			return nil, perr.Wrap(err, CodeUsage, "check the --input-file path", "cannot read input file %s", file)
		}
		text = string(b)
	} else if !c.IsSet("input") {
		return nil, nil
	}
	if t := strings.TrimSpace(text); t != "" && json.Valid([]byte(t)) {
		return json.RawMessage(t), nil
	}
	b, _ := json.Marshal(text)
	return b, nil
}

// follow prints the run's events until it ends, deciding approvals inline
// on a terminal, and returns the run's exit status.
func (ss *session) follow(id string) error {
	var in *bufio.Reader
	interactive := ss.io.InTTY && ss.out.text()
	if interactive {
		in = bufio.NewReader(ss.io.In)
	}
	ss.out.Spin("starting run " + id)
	err := ss.cl.Follow(ss.c.Context, id, 0, func(e events.Event) error {
		switch ss.out.format {
		case OutText:
			ss.out.Event(e, false)
		case OutJSONL:
			ss.out.JSON(e)
		}
		if e.Type == events.Suspended {
			ss.onSuspended(id, e, in)
		}
		if e.Type.IsTerminal() || e.Type == events.Unreadable { // a damaged run goes no further
			return client.ErrStop
		}
		if ss.out.text() && e.Type != events.StepStarted && e.Type != events.Suspended {
			ss.out.Spin("working")
		}
		return nil
	})
	ss.out.StopSpin()
	if err != nil {
		return err
	}
	sum, err := ss.cl.Status(ss.c.Context, id)
	if err != nil {
		return err
	}
	if ss.out.format == OutJSON {
		ss.out.JSON(sum)
	}
	return runExit(sum)
}

// onSuspended asks for the decision on a terminal, or says how to give it.
func (ss *session) onSuspended(id string, e events.Event, in *bufio.Reader) {
	sum, err := ss.cl.Status(ss.c.Context, id)
	if err != nil {
		return
	}
	waiting := false
	for _, w := range sum.Waiting {
		waiting = waiting || w.StepKey == e.Key
	}
	if !waiting {
		return // decided already (following an older run)
	}
	if in == nil {
		hint := "to decide: " + resumeHint(id, e.Key)
		if ss.out.text() {
			ss.out.Line("        %s", ss.out.style(styleYellow, hint))
		} else {
			ss.io.Err.Write([]byte("polos: run " + textsafe.Escape(id) + " waits; " + textsafe.Escape(hint) + "\n"))
		}
		return
	}
	data, ok := ss.prompt(formOf(e.Data), in)
	if !ok {
		ss.out.Line("        %s", ss.out.style(styleYellow, "no decision read; "+resumeHint(id, e.Key)))
		return
	}
	_, err = ss.cl.Resume(ss.c.Context, id, e.Key, client.Decision{Data: data, DecidedBy: decidedBy(os.Getenv("USER")), Validate: hitl.Validate})
	if err != nil {
		ss.out.Line("        %s", ss.out.style(styleYellow, err.Error()))
	}
}

// prompt asks a person for the decision on form. ok is false when input
// ended.
func (ss *session) prompt(f *hitl.Form, in *bufio.Reader) (json.RawMessage, bool) {
	p := ss.out
	ask := func(q styled) (string, bool) {
		p.write(q)
		line, err := in.ReadString('\n')
		if err != nil && line == "" {
			return "", false
		}
		return strings.TrimSpace(line), true
	}
	data := map[string]any{}
	approval := f == nil
	if f != nil {
		for _, fl := range f.Fields {
			approval = approval || (fl.Key == "approved" && fl.Type == "boolean")
		}
	}
	if approval {
		for {
			a, ok := ask("        " + p.style(styleBold, "[a]pprove  [r]eject  a[l]ways allow") + " > ")
			if !ok {
				return nil, false
			}
			switch strings.ToLower(a) {
			case "a", "approve", "y", "yes":
				data["approved"] = true
			case "l", "always", "allow always":
				data["approved"], data["allow_always"] = true, true
			case "r", "reject", "n", "no":
				data["approved"] = false
				fb, ok := ask("        feedback (what to do instead; empty for none) > ")
				if !ok {
					return nil, false
				}
				if fb != "" {
					data["feedback"] = fb
				}
			default:
				continue
			}
			break
		}
	}
	if f != nil {
		for _, fl := range f.Fields {
			if fl.Key == "approved" || fl.Key == "feedback" && approval {
				continue
			}
			for {
				label := fl.Label
				if label == "" {
					label = fl.Key
				}
				hint := string(fl.Type)
				if len(fl.Options) > 0 {
					vals := make([]string, len(fl.Options))
					for i, o := range fl.Options {
						vals[i] = o.Value
					}
					hint = strings.Join(vals, "|")
				}
				v, ok := ask(p.sprintf("        %s (%s) > ", label, hint))
				if !ok {
					return nil, false
				}
				if v == "" {
					if fl.Required {
						continue
					}
					break
				}
				switch fl.Type {
				case "boolean":
					data[fl.Key] = strings.HasPrefix(strings.ToLower(v), "y") || v == "true"
				case "number", "integer":
					n, err := strconv.ParseFloat(v, 64)
					if err != nil {
						continue
					}
					data[fl.Key] = n
				default:
					data[fl.Key] = v
				}
				break
			}
		}
	}
	b, _ := json.Marshal(data)
	return b, true
}

func startOptions(c *cli.Context) client.StartOptions {
	o := client.StartOptions{ID: c.String("id"), Session: c.String("session"), RunTimeout: c.Duration("run-timeout")}
	if n := c.Int("attempts"); n > 1 {
		o.Retry = &replay.WorkflowRetry{MaxAttempts: n, InitialInterval: time.Second}
	}
	return o
}
