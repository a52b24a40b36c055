package policy

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// TestDataDriven runs the transcripts in testdata/*.txt. Regenerate the
// expected output after a deliberate change with
//
//	go test ./policy -run TestDataDriven -rewrite
//
// and read the diff: every changed decision must be intended.
//
// Commands:
//
//	policy [env=local|docker|e2b] [workspace=DIR] [network=MODE]
//	<policy YAML>
//
// sets the policy (and context) for the checks that follow.
//
//	check
//	[@env NAME=value]...
//	[@cwd DIR]
//	[@grant PATTERN]...
//	<command>
//
// checks an exec request and prints the decision and every reason.
//
//	path op=read|write|edit|glob|grep
//	<path>
//
// checks a file operation.
func TestDataDriven(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts in testdata: %v", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) { runTranscript(t, path) })
	}
}

// runTranscript runs one transcript file.
func runTranscript(t *testing.T, path string) {
	var p *Policy
	ctx := Context{Env: EnvLocal, Workspace: ddWorkspace}
	datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
		switch d.Cmd {
		case "policy":
			var err error
			p, err = Parse([]byte(d.Input), "")
			if err != nil {
				return "error: " + err.Error() + "\n"
			}
			ctx = Context{Env: EnvLocal, Workspace: ddWorkspace}
			for _, arg := range d.CmdArgs {
				switch arg.Key {
				case "env":
					ctx.Env = Env(arg.Vals[0])
				case "workspace":
					ctx.Workspace = arg.Vals[0]
				case "network":
					ctx.Network = arg.Vals[0]
				default:
					d.Fatalf(t, "unknown argument %s", arg.Key)
				}
			}
			return "ok\n"
		case "check":
			if p == nil {
				d.Fatalf(t, "check before policy")
			}
			x, c := parseCheckInput(d.Input, ctx)
			return formatResult(p.CheckExec(x, c))
		case "path":
			if p == nil {
				d.Fatalf(t, "path before policy")
			}
			var op string
			d.ScanArgs(t, "op", &op)
			return formatResult(p.CheckPath(Op(op), d.Input, ctx))
		default:
			d.Fatalf(t, "unknown command %s", d.Cmd)
			return ""
		}
	})
}

// ddWorkspace is the workspace of the transcripts; it does not exist, so
// the checks are lexical and the output does not depend on the machine.
const ddWorkspace = "/nonexistent/ws"

// parseCheckInput splits a check's input into directives and the command.
func parseCheckInput(in string, ctx Context) (Exec, Context) {
	var x Exec
	lines := strings.Split(in, "\n")
	i := 0
	for ; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.HasPrefix(l, "@env "):
			name, val, _ := strings.Cut(strings.TrimPrefix(l, "@env "), "=")
			if x.Env == nil {
				x.Env = map[string]string{}
			}
			x.Env[name] = val
		case strings.HasPrefix(l, "@cwd "):
			x.Cwd = strings.TrimPrefix(l, "@cwd ")
		case strings.HasPrefix(l, "@grant "):
			ctx.Grants = append(ctx.Grants, strings.TrimPrefix(l, "@grant "))
		default:
			x.Command = strings.Join(lines[i:], "\n")
			return x, ctx
		}
	}
	return x, ctx
}

func formatResult(r Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", r.Decision)
	for _, x := range r.Reasons {
		fmt.Fprintf(&b, "  %s [%s] %s: %s\n", x.Decision, oneLine(x.Segment), x.Rule, x.Why)
	}
	return b.String()
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", `\n`) }
