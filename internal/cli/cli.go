// Package cli is the `polos` command line: run, resume, tail, status,
// result, list, cancel and history, over NATS with package client.
//
// Exit codes are a contract (docs/cli.md): 0 success; 1 the run failed (or
// was cancelled); 2 usage error or bad input; 3 not found; 4 the step is
// not waiting (or was already decided, or the run is finished); 5 cannot
// reach the server; 6 the server's store refuses writes or does not answer
// (STORE_FULL, STORE_READ_ONLY, STORE_NO_QUORUM, STORE_UNAVAILABLE).
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/polos-run/polos/bench"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/cli/budgetcmd"
	"github.com/polos-run/polos/internal/cli/conn"
	"github.com/polos-run/polos/internal/cli/grantscmd"
	"github.com/polos-run/polos/internal/cli/policycmd"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/replay"
)

// Exit codes.
const (
	ExitOK          = 0
	ExitRunFailed   = 1
	ExitUsage       = 2
	ExitNotFound    = 3
	ExitNotWaiting  = 4
	ExitUnreachable = 5
	ExitStore       = 6
)

// Defaults.
const (
	DefaultServer    = conn.DefaultServer
	DefaultNamespace = conn.DefaultNamespace
)

// Output formats.
const (
	OutText  = "text"
	OutJSON  = "json"
	OutJSONL = "jsonl"
)

// CodeUsage marks a usage error or bad input (exit 2).
const CodeUsage perr.Code = "USAGE"

// IO is where a command reads and writes; Main uses the process's.
type IO struct {
	In     io.Reader
	Out    io.Writer
	Err    io.Writer
	InTTY  bool // stdin is a terminal: approvals are asked inline
	OutTTY bool // stdout is a terminal: colour and spinners
}

// StdIO returns the process's streams with terminal detection.
func StdIO() IO {
	return IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr,
		InTTY: term.IsTerminal(int(os.Stdin.Fd())), OutTTY: term.IsTerminal(int(os.Stdout.Fd()))}
}

// Main runs the CLI with args (args[0] is the program name) and returns the
// exit code.
func Main(args []string, s IO) int {
	app := App(s)
	args = reorder(app, args)
	err := app.Run(args)
	if err == nil {
		return ExitOK
	}
	code := ExitCode(err)
	var ec cli.ExitCoder
	if errors.As(err, &ec) && perr.CodeOf(err) == "" {
		if msg := strings.TrimSpace(ec.Error()); msg != "" {
			fmt.Fprintln(s.Err, "polos:", msg)
		}
		return ec.ExitCode()
	}
	var quiet *quietExit
	if errors.As(err, &quiet) {
		return quiet.code
	}
	fmt.Fprintln(s.Err, "polos:", err)
	if perr.CodeOf(err) == client.CodeUnreachable {
		fmt.Fprintln(s.Err, "polos: no Polos server answered. Start one with `polosd` (or try `make demo`), or point --server / POLOS_NATS_URL at a running one.")
	}
	return code
}

// ExitCode maps an error to the documented exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var quiet *quietExit
	if errors.As(err, &quiet) {
		return quiet.code
	}
	switch perr.CodeOf(err) {
	case events.CodeRunNotFound, replay.CodeWorkflowNotFound:
		return ExitNotFound
	case client.CodeStepNotWaiting, client.CodeAlreadyDecided, client.CodeRunFinished, events.CodeRunDamaged:
		return ExitNotWaiting
	case client.CodeUnreachable, client.CodeUnauthorized, client.CodeNoControl:
		return ExitUnreachable
	case CodeUsage, client.CodeBadInput, events.CodeBadID, replay.CodeBadPayload:
		return ExitUsage
	case protocol.CodeStoreFull, protocol.CodeStoreReadOnly, protocol.CodeStoreNoQuorum, protocol.CodeStoreIO:
		return ExitStore
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return ExitRunFailed
}

// quietExit ends the command with a code and no further message (the
// command already printed what happened, e.g. a failed run's error).
type quietExit struct{ code int }

func (q *quietExit) Error() string { return fmt.Sprintf("exit %d", q.code) }

func usageErr(format string, args ...any) error {
	return perr.New(CodeUsage, "see `polos help`", format, args...)
}

// App builds the command tree.
func App(s IO) *cli.App {
	return &cli.App{
		Name:      "polos",
		Usage:     "drive Polos runs: start, follow, approve, inspect",
		Reader:    s.In,
		Writer:    s.Out,
		ErrWriter: s.Err,
		Commands: []*cli.Command{
			runCommand(s),
			resumeCommand(s),
			tailCommand(s),
			statusCommand(s),
			resultCommand(s),
			listCommand(s),
			cancelCommand(s),
			historyCommand(s),
			indexCommand(s),
			verifyCommand(s),
			policycmd.Command(),
			budgetcmd.Command(),
			grantscmd.Command(),
			bench.Command(),
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageErr("%v", err) },
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(s.Err, "polos: unknown command %q (see `polos help`)\n", name)
			cli.HandleExitCoder(cli.Exit("", ExitUsage))
		},
		ExitErrHandler: func(*cli.Context, error) {}, // Main maps errors to exit codes
	}
}

// commonFlags are accepted by every command, before or after its arguments.
func commonFlags() []cli.Flag {
	return append(conn.Flags(),
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "text | json | jsonl", Value: OutText})
}

func withCommon(c *cli.Command) *cli.Command {
	c.Flags = append(c.Flags, commonFlags()...)
	c.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageErr("%v", err) }
	return c
}

func outputOf(c *cli.Context) (string, error) {
	switch o := c.String("output"); o {
	case OutText, OutJSON, OutJSONL:
		return o, nil
	default:
		return "", usageErr("unknown output format %q (use text, json or jsonl)", o)
	}
}

// connect dials the server the flags (or the local polosd) name.
func connect(c *cli.Context) (*client.Client, error) { return conn.Connect(c) }

// reorder moves each command's flags before its positional arguments, so
// `polos status RUN -o json` works as well as `polos status -o json RUN`
// (urfave/cli stops at the first positional argument).
func reorder(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") {
		i++
	}
	if i >= len(args) {
		return args
	}
	cmd := app.Command(args[i])
	if cmd == nil || len(cmd.Subcommands) > 0 {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	var flags, pos []string
	rest := args[i+1:]
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		if a == "--" {
			pos = append(pos, rest[j+1:]...)
			break
		}
		if len(a) > 1 && strings.HasPrefix(a, "-") {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && j+1 < len(rest) {
				flags = append(flags, rest[j+1])
				j++
			}
			continue
		}
		pos = append(pos, a)
	}
	out := append([]string{}, args[:i+1]...)
	out = append(out, flags...)
	if len(pos) > 0 {
		out = append(out, "--")
		out = append(out, pos...)
	}
	return out
}
