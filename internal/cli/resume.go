package cli

import (
	"github.com/polos-run/polos/hitl"

	"encoding/json"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
)

func resumeCommand(s IO) *cli.Command {
	return withCommon(&cli.Command{
		Name:  "resume",
		Usage: "decide a waiting step (the step key may be left out when exactly one step waits)",
		UsageText: "polos resume <run> [<step-key>] (--approve | --reject) [--feedback TEXT] [--allow-always] [--data JSON]\n\n" +
			"The resume data is --data (a JSON object) with approved, feedback and allow_always\n" +
			"set from the flags; a flag wins over the same field in --data.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "approve", Usage: "approve (approved: true)"},
			&cli.BoolFlag{Name: "reject", Usage: "reject (approved: false)"},
			&cli.StringFlag{Name: "feedback", Usage: "feedback for the agent (with --reject: what to do instead)"},
			&cli.BoolFlag{Name: "allow-always", Usage: "approve and remember the approval for similar requests"},
			&cli.StringFlag{Name: "data", Usage: "resume data as a JSON object (form fields)"},
			&cli.StringFlag{Name: "by", Usage: "ignored: the decision records the identity of the credentials (operator:<name>)", EnvVars: []string{"USER"}},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 || c.NArg() > 2 {
				return usageErr("resume takes a run ID and optionally a step key (usage: polos resume <run> [<step-key>] --approve|--reject)")
			}
			data, err := decisionData(c.String("data"), c.IsSet("data"), c.Bool("approve"), c.Bool("reject"),
				c.String("feedback"), c.IsSet("feedback"), c.Bool("allow-always"))
			if err != nil {
				return err
			}
			return action(s, -1, func(ss *session) error {
				id, key := c.Args().Get(0), c.Args().Get(1)
				if key == "" {
					if key, err = ss.onlyWaitingStep(id); err != nil {
						return err
					}
				}
				sum, err := ss.cl.Resume(c.Context, id, key, client.Decision{Data: data, DecidedBy: decidedBy(c.String("by")), Validate: hitl.Validate})
				// Form validation: client.Decision.Validate is the single
				// hook; the human-in-the-loop package (hitl.Validate) plugs
				// in there.
				if err != nil {
					return err
				}
				if ss.out.text() {
					ss.out.Line("%s %s of run %s: %s", ss.out.style(styleGreen, "✓"), key, id, decisionText(data))
				} else {
					ss.out.JSON(sum)
				}
				return nil
			})(c)
		},
	})
}

func decidedBy(user string) string {
	if user == "" {
		return "cli"
	}
	return "cli:" + user
}

// decisionData builds the resume data: the --data object with the flags'
// fields set on top (a flag wins over the same key in --data).
func decisionData(raw string, haveData, approve, reject bool, feedback string, haveFeedback, always bool) (json.RawMessage, error) {
	if approve && reject {
		return nil, usageErr("give --approve or --reject, not both")
	}
	if always && reject {
		return nil, usageErr("--allow-always approves; it cannot go with --reject")
	}
	if !approve && !reject && !always && !haveData {
		return nil, usageErr("say what to decide: --approve, --reject, --allow-always or --data JSON")
	}
	m := map[string]any{}
	if haveData {
		dec := json.NewDecoder(strings.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil || dec.More() {
			if err == nil {
				err = fmt.Errorf("trailing data after the object")
			}
			return nil, perr.Wrap(err, CodeUsage, `pass a JSON object, e.g. --data '{"approved": true, "feedback": "ok"}'`, "--data is not a JSON object")
		}
	}
	switch {
	case approve || always:
		m["approved"] = true
	case reject:
		m["approved"] = false
	}
	if always {
		m["allow_always"] = true
	}
	if haveFeedback {
		m["feedback"] = feedback
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, perr.Wrap(err, CodeUsage, "", "cannot encode resume data")
	}
	return b, nil
}

// onlyWaitingStep returns the key of the one step of run id that waits for
// a decision; none is exit 4, several a usage error naming them.
func (ss *session) onlyWaitingStep(id string) (string, error) {
	sum, err := ss.cl.Status(ss.c.Context, id)
	if err != nil {
		return "", err
	}
	var keys []string
	for _, w := range sum.Waiting {
		if w.Kind == events.WaitApproval || w.Kind == events.WaitOperator {
			keys = append(keys, w.StepKey)
		}
	}
	switch len(keys) {
	case 1:
		return keys[0], nil
	case 0:
		if sum.Status != events.StatusRunning && sum.Status != events.StatusWaiting {
			return "", perr.New(client.CodeRunFinished, "nothing to decide", "run %s is %s", id, sum.Status)
		}
		return "", perr.New(client.CodeStepNotWaiting, "wait until the run asks (polos tail "+id+" --follow)", "run %s has no step waiting for a decision", id)
	default:
		return "", usageErr("run %s has %d steps waiting (%s): name the step key", id, len(keys), strings.Join(keys, ", "))
	}
}
