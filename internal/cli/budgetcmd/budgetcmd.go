// Package budgetcmd implements `polos budget show|set`: token and cost
// budgets per run, agent and namespace. Raising a budget resumes the runs
// that paused on it.
package budgetcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/perr"
	"github.com/polos-run/polos/ratelimit"
)

// CodeUsage: the command line of `polos budget` is wrong.
const CodeUsage perr.Code = "BUDGET_USAGE"

// Defaults.
const (
	DefaultServer  = "nats://127.0.0.1:4222"
	DefaultTimeout = 10 * time.Second
	// DecidedBy is recorded on the resumes `budget set` makes.
	DecidedBy = "polos budget set"
)

// Command returns the `budget` command with `show` and `set`.
func Command() *cli.Command {
	conn := []cli.Flag{
		&cli.StringFlag{Name: "server", Value: DefaultServer, EnvVars: []string{"POLOS_NATS_URL"}, Usage: "NATS URL of the Polos server"},
		&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: events.DefaultNamespace, EnvVars: []string{"POLOS_NAMESPACE"}, Usage: "namespace"},
	}
	scope := []cli.Flag{
		&cli.StringFlag{Name: "run", Usage: "the budget of one run"},
		&cli.StringFlag{Name: "agent", Usage: "the budget of every run of an agent (workflow name)"},
		&cli.BoolFlag{Name: "namespace-wide", Usage: "the budget of the whole namespace"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "text or json"},
	}
	return &cli.Command{
		Name:  "budget",
		Usage: "show or set token and cost budgets (per run, agent, namespace)",
		Subcommands: []*cli.Command{
			{
				Name:      "show",
				Usage:     "show budgets and what they used (all of the namespace without a scope flag)",
				UsageText: "polos budget show [--run ID | --agent NAME | --namespace-wide] [-o json]",
				Flags:     append(append([]cli.Flag{}, conn...), scope...),
				Action:    show,
			},
			{
				Name:      "set",
				Usage:     "set a budget's limits; runs paused on it resume when it allows them again",
				UsageText: "polos budget set (--run ID | --agent NAME | --namespace-wide) [--tokens N] [--cost USD]",
				Flags: append(append(append([]cli.Flag{}, conn...), scope...),
					&cli.Int64Flag{Name: "tokens", Usage: "token limit (0: none)"},
					&cli.Float64Flag{Name: "cost", Usage: "cost limit in USD (0: none)"}),
				Action: set,
			},
		},
	}
}

func usage(format string, args ...any) error {
	return cli.Exit(perr.New(CodeUsage, "run `polos budget --help`", format, args...).Error(), 2)
}

// scopeOf reads the scope flags; ok is false when none is given.
func scopeOf(c *cli.Context) (ratelimit.Scope, bool, error) {
	var got []ratelimit.Scope
	if c.IsSet("run") {
		got = append(got, ratelimit.Scope{Kind: ratelimit.ScopeRun, ID: c.String("run")})
	}
	if c.IsSet("agent") {
		got = append(got, ratelimit.Scope{Kind: ratelimit.ScopeAgent, ID: c.String("agent")})
	}
	if c.Bool("namespace-wide") {
		got = append(got, ratelimit.Scope{Kind: ratelimit.ScopeNamespace})
	}
	switch len(got) {
	case 0:
		return ratelimit.Scope{}, false, nil
	case 1:
		return got[0], true, nil
	}
	return ratelimit.Scope{}, false, usage("give one of --run, --agent, --namespace-wide (got %d)", len(got))
}

func connect(c *cli.Context) (*client.Client, *ratelimit.Budget, error) {
	cl, err := client.Connect(c.String("server"), c.String("namespace"))
	if err != nil {
		return nil, nil, err
	}
	js := cl.Store().JS()
	return cl, ratelimit.NewBudget(js, cl.Namespace()), nil
}

func show(c *cli.Context) error {
	sc, one, err := scopeOf(c)
	if err != nil {
		return err
	}
	cl, b, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(c.Context, DefaultTimeout)
	defer cancel()
	var states []ratelimit.BudgetState
	if one {
		st, err := b.Get(ctx, sc)
		if err != nil {
			return err
		}
		states = []ratelimit.BudgetState{st}
	} else if states, err = b.List(ctx); err != nil {
		return err
	}
	sort.Slice(states, func(i, j int) bool { return states[i].Scope.String() < states[j].Scope.String() })
	return render(c.App.Writer, c.String("output"), states)
}

func render(w io.Writer, format string, states []ratelimit.BudgetState) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(states)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCOPE\tTOKENS USED\tTOKEN LIMIT\tCOST USED\tCOST LIMIT")
	for _, st := range states {
		fmt.Fprintf(tw, "%s\t%d\t%s\t$%.4f\t%s\n", st.Scope, st.Used.Tokens, orNone(st.Limit.Tokens > 0, fmt.Sprint(st.Limit.Tokens)), st.Used.Cost, orNone(st.Limit.Cost > 0, fmt.Sprintf("$%.4f", st.Limit.Cost)))
	}
	return tw.Flush()
}

func orNone(ok bool, s string) string {
	if ok {
		return s
	}
	return "none"
}

func set(c *cli.Context) error {
	sc, one, err := scopeOf(c)
	if err != nil {
		return err
	}
	if !one {
		return usage("name the budget to set with --run, --agent or --namespace-wide")
	}
	if !c.IsSet("tokens") && !c.IsSet("cost") {
		return usage("give --tokens and/or --cost")
	}
	cl, b, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(c.Context, DefaultTimeout)
	defer cancel()
	cur, err := b.Get(ctx, sc)
	if err != nil {
		return err
	}
	l := cur.Limit
	if c.IsSet("tokens") {
		l.Tokens = c.Int64("tokens")
	}
	if c.IsSet("cost") {
		l.Cost = c.Float64("cost")
	}
	st, err := b.Set(ctx, sc, l)
	if err != nil {
		return err
	}
	resumed, err := ResumePaused(ctx, cl, sc)
	if err := render(c.App.Writer, c.String("output"), []ratelimit.BudgetState{st}); err != nil {
		return err
	}
	for _, id := range resumed {
		fmt.Fprintf(c.App.Writer, "resumed run %s\n", id)
	}
	return err
}

// ResumePaused resumes every waiting run of the namespace whose budget
// form names scope. The run re-checks its budgets when it resumes, so a
// limit still too low pauses it again. It returns the resumed run IDs.
func ResumePaused(ctx context.Context, cl *client.Client, scope ratelimit.Scope) ([]string, error) {
	sums, err := cl.List(ctx, client.ListFilter{Status: events.StatusWaiting})
	if err != nil {
		return nil, err
	}
	var resumed []string
	for _, s := range sums {
		for _, w := range s.Waiting {
			var form map[string]any
			if json.Unmarshal(w.Form, &form) != nil || form[ratelimit.FormSourceField] != ratelimit.FormSource || form[ratelimit.FormScopeField] != scope.String() {
				continue
			}
			data, _ := json.Marshal(map[string]any{"budget_raised": scope.String()})
			_, err := cl.Resume(ctx, s.ID, w.StepKey, client.Decision{Data: data, DecidedBy: DecidedBy})
			switch perr.CodeOf(err) {
			case "", client.CodeAlreadyDecided, client.CodeStepNotWaiting, client.CodeRunFinished:
				if err == nil {
					resumed = append(resumed, s.ID)
				}
			default:
				return resumed, err
			}
		}
	}
	return resumed, nil
}
