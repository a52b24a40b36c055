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

	"github.com/polos-run/polos/internal/cli/conn"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/ratelimit"
)

// CodeUsage: the command line of `polos budget` is wrong.
const CodeUsage perr.Code = "BUDGET_USAGE"

// DefaultTimeout bounds one budget command.
const DefaultTimeout = 10 * time.Second

// Command returns the `budget` command with `show` and `set`.
func Command() *cli.Command {
	connFlags := conn.Flags()
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
				Flags:     append(append([]cli.Flag{}, connFlags...), scope...),
				Action:    show,
			},
			{
				Name:      "set",
				Usage:     "set a budget's limits; runs paused on it resume when it allows them again",
				UsageText: "polos budget set (--run ID | --agent NAME | --namespace-wide) [--tokens N] [--cost USD]",
				Flags: append(append(append([]cli.Flag{}, connFlags...), scope...),
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

func wireScope(s ratelimit.Scope) protocol.BudgetScope {
	return protocol.BudgetScope{Kind: string(s.Kind), ID: s.ID}
}

func show(c *cli.Context) error {
	sc, one, err := scopeOf(c)
	if err != nil {
		return err
	}
	cl, err := conn.Connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(c.Context, DefaultTimeout)
	defer cancel()
	var req protocol.BudgetRequest
	if one {
		ws := wireScope(sc)
		req.Scope = &ws
	}
	var states []ratelimit.BudgetState
	if err := cl.Control(ctx, protocol.CtlBudgets, req, &states); err != nil {
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
	req := protocol.SetBudgetRequest{Scope: wireScope(sc)}
	if c.IsSet("tokens") {
		t := c.Int64("tokens")
		req.Tokens = &t
	}
	if c.IsSet("cost") {
		v := c.Float64("cost")
		req.Cost = &v
	}
	cl, err := conn.Connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(c.Context, DefaultTimeout)
	defer cancel()
	var r protocol.SetBudgetReply
	err = cl.Control(ctx, protocol.CtlSetBudget, req, &r)
	if len(r.Budget) > 0 {
		var st ratelimit.BudgetState
		if jerr := json.Unmarshal(r.Budget, &st); jerr == nil {
			if rerr := render(c.App.Writer, c.String("output"), []ratelimit.BudgetState{st}); rerr != nil {
				return rerr
			}
		}
	}
	for _, id := range r.Resumed {
		fmt.Fprintf(c.App.Writer, "resumed run %s\n", id)
	}
	return err
}
