package policy

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// Exec is an exec tool request as the policy sees it: the shell command,
// the environment variables the request adds, and the directory it runs in.
type Exec struct {
	Command string
	// Env is added to the environment of the sandbox's shell, so it reaches
	// every program the command runs. It is read as if each NAME=value were
	// written before every simple command (`NAME=value cmd`): a loader
	// variable (NODE_OPTIONS, PYTHONSTARTUP, LD_PRELOAD, ...) is a hazard
	// that only an allow rule naming `NAME=` lifts, and variables the
	// sandbox's shell itself reads at start-up (BASH_ENV, ENV, SHELLOPTS,
	// exported functions) ask whatever the rules say.
	Env map[string]string
	// Cwd is the directory the command starts in, relative to the workspace
	// or absolute; empty means the workspace.
	Cwd string
}

// envEntry is one loader variable of the exec request's env.
type envEntry struct {
	name string
	word word // NAME=value, literal
}

// shellStartupEnv are variables the sandbox's own shell (sh -c, which may
// be bash) reads before it runs the command: no rule about the programs in
// the command can account for them.
var shellStartupEnv = setOf("BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "IFS", "PROMPT_COMMAND",
	"POSIXLY_CORRECT", "BASH_XTRACEFD", "BASH_LOADABLES_PATH", "GLOBIGNORE", "CDPATH", "HISTFILE")

// CheckExec decides an exec request: its command (see CheckCommand), its
// env (as assignments written before every simple command) and its cwd.
// Every simple command in the command (in lists, pipelines, subshells,
// groups, compound commands, functions and substitutions) is matched
// against the rules; the strictest decision wins. See the package
// documentation and docs/policy.md for the hazards that are at least ask.
func (p *Policy) CheckExec(x Exec, c Context) Result {
	a := &analysis{p: p, c: &c, eff: p.effective(c.Env)}
	a.readRoot, a.readConfined = p.confinement(&c)
	a.root, a.confined = a.readRoot, a.readConfined
	if !a.confined && !a.eff.open && c.Workspace != "" {
		// docker and e2b: the container is the boundary for the file tools,
		// but a policy that restricts commands must not let a redirection
		// plant files (a module, a script on PATH) outside the workspace
		// that allowed commands then load.
		a.root, a.confined = filepath.Clean(c.Workspace), true
	}
	a.baseCwd, a.baseCwdKnown = c.Workspace, true
	if x.Cwd != "" {
		a.baseCwd = joinCwd(c.Workspace, x.Cwd)
	}
	a.cwd, a.cwdKnown = a.baseCwd, a.baseCwdKnown
	cmd := x.Command
	trimmed := strings.TrimSpace(cmd)
	for i, raw := range c.Grants {
		g := canonicalPattern(raw)
		if g == "" {
			continue
		}
		gp := compilePattern(g, fmt.Sprintf("grant[%d] %q", i, raw))
		a.grants = append(a.grants, gp)
		if !strings.Contains(raw, "*") && strings.TrimSpace(raw) == trimmed {
			whole := gp
			a.wholeGrant = &whole
		}
	}
	a.execEnvironment(x)
	a.command(cmd, 0)
	if a.wholeGrant != nil {
		kept := a.reasons[:0]
		for _, r := range a.reasons {
			if r.Decision == DecisionDeny || r.Rule == ruleParse || r.Rule == RuleExecEnv {
				kept = append(kept, r)
			}
		}
		a.reasons = append(kept, Reason{Segment: trimmed, Rule: a.wholeGrant.rule, Why: "a person allowed this exact command always", Decision: DecisionAllow})
	}
	if len(a.reasons) == 0 {
		a.reasons = append(a.reasons, Reason{Segment: trimmed, Rule: "empty", Why: "the command runs nothing", Decision: DecisionAllow})
	}
	return p.finish(a.reasons)
}

// execEnvironment reads the exec request's env and cwd: loader variables
// become assignments of every simple command; what the sandbox's shell
// reads itself, names no shell can assign, values that are paths outside
// the workspace and a cwd outside it are reasons of their own.
func (a *analysis) execEnvironment(x Exec) {
	names := make([]string, 0, len(x.Env))
	for name := range x.Env {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		val := x.Env[name]
		seg := "env " + name + "=" + val
		ask := func(why string) {
			if !a.eff.open {
				a.reason(seg, RuleExecEnv, why, DecisionAsk)
			}
		}
		if _, ok := assignmentName(name + "="); !ok {
			ask(fmt.Sprintf("the exec request's env names %q, which is not a shell variable name; programs still read it from their environment (bash imports BASH_FUNC_name%%%% as a function)", name))
		} else if shellStartupEnv[name] || strings.HasPrefix(name, "BASH_FUNC_") {
			ask("the exec request's env sets " + name + ", which the sandbox's own shell reads before it runs the command")
		}
		if isLoaderEnv(name) || strings.HasPrefix(name, "BASH_FUNC_") {
			a.execEnv = append(a.execEnv, envEntry{name: name, word: literalWord(name + "=" + val)})
		}
		if rs := a.readPath(seg, literalWord(val), val, a.baseCwd, true, "the env value "+name); len(rs) > 0 {
			a.reasons = append(a.reasons, rs...)
		}
	}
	if x.Cwd != "" && a.readConfined {
		v := a.judge(a.baseCwd, a.baseCwd, false)
		if !v.loc.inside && v.allowed == nil {
			a.reason("cwd "+x.Cwd, "path_restriction", "the command runs in a directory outside the workspace: "+v.loc.why, DecisionAsk)
		}
	}
}

// AsksForEnv reports whether the result asks because of the exec
// request's env (a reason with RuleExecEnv). Callers that lift asks with
// grants keyed by the command alone must not lift these.
func AsksForEnv(r Result) bool {
	for _, x := range r.Reasons {
		if x.Rule == RuleExecEnv && x.Decision != DecisionAllow {
			return true
		}
	}
	return false
}

// joinCwd resolves dir against cwd.
func joinCwd(cwd, dir string) string {
	if filepath.IsAbs(dir) || cwd == "" {
		return filepath.Clean(dir)
	}
	return filepath.Join(cwd, dir)
}
