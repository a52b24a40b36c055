// Package policycmd implements `polos policy check`: it prints the decision
// a policy file gives for one command or file operation, with the reasons.
//
// Exit status: 0 whatever the decision (allow, ask and deny are answers, not
// failures); 2 for a broken policy file or a usage error, with the file,
// line and what is wrong.
package policycmd

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/policy"
	"github.com/urfave/cli/v2"
)

// CodeUsage: the command line of `polos policy check` is wrong.
const CodeUsage perr.Code = "POLICY_CHECK_USAGE"

// ExitBroken is the exit status for a broken policy file or a usage error.
const ExitBroken = 2

// Output formats.
const (
	OutputText = "text"
	OutputJSON = "json"
)

// subjects are the mutually exclusive flags naming what to check; the
// value of each is a command or a path.
var subjects = []struct {
	flag string
	op   policy.Op // "" for a command
	doc  string
}{
	{"command", "", "a shell command to check"},
	{"read", policy.OpRead, "a path to check for reading"},
	{"write", policy.OpWrite, "a path to check for writing"},
	{"edit", policy.OpEdit, "a path to check for editing"},
	{"glob", policy.OpGlob, "a directory or glob pattern to check for listing"},
	{"grep", policy.OpGrep, "a directory or glob pattern to check for searching"},
}

// Command returns the `policy` command with its `check` subcommand.
func Command() *cli.Command {
	return &cli.Command{
		Name:        "policy",
		Usage:       "work with allow / ask / deny policies",
		Subcommands: []*cli.Command{checkCommand()},
	}
}

func checkCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "policy", Usage: "the policy file (YAML)"},
		&cli.StringFlag{Name: "env", Value: string(policy.EnvLocal), Usage: "the sandbox kind whose defaults apply: local, docker or e2b"},
		&cli.StringFlag{Name: "workspace", Usage: "the workspace directory (default: the current directory)"},
		&cli.StringSliceFlag{Name: "grant", Usage: "an \"allow always\" pattern a person approved (repeatable)"},
		&cli.StringFlag{Name: "network", Usage: "the docker network mode (none, bridge, ...)"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: OutputText, Usage: "text or json"},
	}
	for _, s := range subjects {
		flags = append(flags, &cli.StringFlag{Name: s.flag, Usage: s.doc})
	}
	return &cli.Command{
		Name:      "check",
		Usage:     "print the decision a policy gives for a command or a path, and why",
		UsageText: "polos policy check --policy FILE [--env local|docker|e2b] [--workspace DIR] (--command CMD | --read PATH | --write PATH | --edit PATH | --glob PATTERN | --grep PATH) [-o json]",
		Flags:     flags,
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usage("%v", err)
		},
		Action: check,
	}
}

func usage(format string, args ...any) error {
	e := perr.New(CodeUsage, "run `polos policy check --help` for the flags", format, args...)
	return cli.Exit(e.Error(), ExitBroken)
}

func check(c *cli.Context) error {
	if c.NArg() > 0 {
		return usage("unexpected argument %q; the command or path goes in a flag such as --command", c.Args().First())
	}
	file := c.String("policy")
	if file == "" {
		return usage("--policy is required: the policy file to check against")
	}
	var chosen []string
	for _, s := range subjects {
		if c.IsSet(s.flag) {
			chosen = append(chosen, "--"+s.flag)
		}
	}
	if len(chosen) != 1 {
		return usage("give exactly one of --command, --read, --write, --edit, --glob, --grep (got %d: %s)", len(chosen), strings.Join(chosen, " "))
	}
	env := policy.Env(c.String("env"))
	switch env {
	case policy.EnvLocal, policy.EnvDocker, policy.EnvE2B:
	default:
		return usage("--env %q is not a sandbox kind; expected local, docker or e2b", env)
	}
	out := c.String("output")
	if out != OutputText && out != OutputJSON {
		return usage("-o %q is not an output format; expected text or json", out)
	}
	ws := c.String("workspace")
	if ws == "" {
		wd, err := os.Getwd()
		if err != nil {
			return usage("--workspace is not given and the current directory is unknown: %v", err)
		}
		ws = wd
	}
	ws, err := filepath.Abs(ws)
	if err != nil {
		return usage("--workspace %q: %v", ws, err)
	}

	p, err := policy.Load(file)
	if err != nil {
		return cli.Exit(err.Error(), ExitBroken)
	}
	ctx := policy.Context{
		Env:       env,
		Workspace: ws,
		Grants:    c.StringSlice("grant"),
		Network:   c.String("network"),
		Links:     policy.OSLinks{}, // the workspace given here is a directory on this machine
	}
	var res policy.Result
	var subject string
	for _, s := range subjects {
		if !c.IsSet(s.flag) {
			continue
		}
		subject = c.String(s.flag)
		if s.op == "" {
			res = p.CheckCommand(subject, ctx)
		} else {
			res = p.CheckPath(s.op, subject, ctx)
		}
	}
	if out == OutputJSON {
		return printJSON(c.App.Writer, res)
	}
	return printText(c.App.Writer, subject, res)
}

func printJSON(w io.Writer, res policy.Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

func printText(w io.Writer, subject string, res policy.Result) error {
	fmt.Fprintf(w, "%s: %s\n", res.Decision, subject)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range res.Reasons {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Decision, oneLine(r.Segment), r.Rule, r.Why)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "policy %s\n", res.PolicyDigest)
	return err
}

// oneLine keeps a multi-line segment on one line of the table.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", `\n`)
	if s == "" {
		return `""`
	}
	return s
}
