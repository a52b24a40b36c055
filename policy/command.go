package policy

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"mvdan.cc/sh/v3/syntax"
)

// Limits of command analysis. Past them the command is treated as
// unparsable (ask; deny under a deny default).
const (
	maxCommandBytes = 256 << 10 // longer commands are not analysed
	maxCodeNesting  = 4         // eval "sh -c '...'" levels analysed
)

// The two shells a command is read as. Sandboxes run commands with `sh -c`,
// and sh may be dash (Debian images) or bash: the same text can mean
// different commands to them ($'...' quoting, &>), so both readings are
// checked and the strictest wins. A command bash cannot parse asks; one
// only sh cannot parse is read as bash, unless it holds $'...' (see command).
var dialects = []struct {
	name string
	pool *sync.Pool
}{
	{"bash", &sync.Pool{New: func() any { return syntax.NewParser(syntax.Variant(syntax.LangBash)) }}},
	{"POSIX sh", &sync.Pool{New: func() any { return syntax.NewParser(syntax.Variant(syntax.LangPOSIX)) }}},
}

// CheckCommand decides a shell command with no environment of its own; it
// is CheckExec(Exec{Command: cmd}, c).
func (p *Policy) CheckCommand(cmd string, c Context) Result {
	return p.CheckExec(Exec{Command: cmd}, c)
}

const ruleParse = "parse"

// RuleExecEnv is the rule of reasons about the exec request's env. A grant
// of the command never lifts them: a person who allowed `node hello.js`
// did not allow it with any NODE_OPTIONS.
const RuleExecEnv = "hazard: exec env"

// analysis is the state of one CheckExec call.
type analysis struct {
	p            *Policy
	c            *Context
	eff          effective
	root         string // where writes (redirections, file-writing options) must stay
	confined     bool
	readRoot     string // where reads (path-like arguments) must stay: the file tools' confinement
	readConfined bool
	grants       []pattern
	wholeGrant   *pattern // an exact grant equal to the whole command
	reasons      []Reason
	realRoot     string                 // physical confinement root, once known
	judged       map[string]pathVerdict // judged paths, by kind, cwd and path
	execEnv      []envEntry             // the exec request's loader variables, in name order
	// baseCwd is where the command starts (the workspace, or Exec.Cwd).
	baseCwd      string
	baseCwdKnown bool
	// cwd is the directory of the segment being evaluated (code in its
	// strings runs there).
	cwd      string
	cwdKnown bool
}

// judge resolves a path once per command and kind (both shell readings see
// the same words).
func (a *analysis) judge(target, cwd string, write bool) pathVerdict {
	root, confined := a.readRoot, a.readConfined
	kind := "r"
	if write {
		root, confined, kind = a.root, a.confined, "w"
	}
	key := kind + "\x00" + cwd + "\x00" + target
	if v, ok := a.judged[key]; ok {
		return v
	}
	v := a.p.judgePath(target, cwd, root, confined, a.c, &a.realRoot)
	if a.judged == nil {
		a.judged = make(map[string]pathVerdict)
	}
	a.judged[key] = v
	return v
}

// outcome summarizes the segments of a piece of code: the strictest
// decision and whether every segment was allowed by an explicit rule or
// grant (not by a default).
type outcome struct {
	decision Decision
	explicit bool
}

func (o *outcome) add(x outcome) {
	o.decision = o.decision.Stricter(x.decision)
	o.explicit = o.explicit && x.explicit
}

func newOutcome() outcome { return outcome{decision: DecisionAllow, explicit: true} }

func (a *analysis) reason(seg, rule, why string, d Decision) {
	a.reasons = append(a.reasons, Reason{Segment: seg, Rule: rule, Why: why, Decision: d})
}

// unparsableDecision is ask, or deny when the command default is deny.
func (a *analysis) unparsableDecision() Decision {
	if a.eff.commandDefault.decision == DecisionDeny {
		return DecisionDeny
	}
	return DecisionAsk
}

// command analyses one piece of shell code (the command, or code given as a
// string to eval / sh -c at depth > 0).
func (a *analysis) command(src string, depth int) outcome {
	out := newOutcome()
	fail := func(why string) outcome {
		d := a.unparsableDecision()
		a.reason(strings.TrimSpace(src), ruleParse, why, d)
		return outcome{decision: d}
	}
	switch {
	case depth > maxCodeNesting:
		return fail(fmt.Sprintf("code nested more than %d levels deep in strings is not analysed", maxCodeNesting))
	case len(src) > maxCommandBytes:
		return fail(fmt.Sprintf("the command is longer than %d bytes and is not analysed", maxCommandBytes))
	case strings.ContainsRune(src, 0):
		return fail("the command holds a NUL byte")
	}
	for i, d := range dialects {
		parser := d.pool.Get().(*syntax.Parser)
		file, err := parser.Parse(strings.NewReader(src), "")
		d.pool.Put(parser)
		if err != nil {
			if i > 0 && !strings.Contains(src, "$'") {
				// Bash syntax sh cannot read (&>, arrays, <(...)): sh fails on
				// it, and the bash reading covers every command. Only $'...'
				// moves quote boundaries between the two readings.
				continue
			}
			out.add(fail(fmt.Sprintf("cannot be parsed as %s: %v", d.name, err)))
			continue
		}
		w := walker{a: a, src: src, depth: depth, cwd: a.baseCwd, cwdKnown: a.baseCwdKnown}
		if depth > 0 { // code in a string runs where the command holding it runs
			w.cwd, w.cwdKnown = a.cwd, a.cwdKnown
		}
		out.add(w.walk(file))
	}
	return out
}

// walker visits one parsed file.
type walker struct {
	a        *analysis
	src      string
	depth    int
	frames   []*substFrame
	cwd      string // directory relative redirections resolve against
	cwdKnown bool   // false after a cd to a place we cannot follow
	out      outcome
	// pipeFeeders are the statements on the left of a pipe.
	pipeFeeders map[*syntax.Stmt]bool
}

// substFrame collects the segments inside one command or process
// substitution.
type substFrame struct {
	node     syntax.Node
	explicit bool
}

func (w *walker) text(n syntax.Node) string {
	start, end := n.Pos().Offset(), n.End().Offset()
	if start > end || int(end) > len(w.src) {
		return ""
	}
	return w.src[start:end]
}

func (w *walker) walk(file *syntax.File) outcome {
	w.out = newOutcome()
	var stack []syntax.Node
	syntax.Walk(file, func(n syntax.Node) bool {
		if n == nil {
			top := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if len(w.frames) > 0 && w.frames[len(w.frames)-1].node == top {
				w.closeFrame()
			}
			return true
		}
		stack = append(stack, n)
		switch x := n.(type) {
		case *syntax.Stmt:
			w.redirects(x)
		case *syntax.CmdSubst, *syntax.ProcSubst:
			w.frames = append(w.frames, &substFrame{node: x, explicit: true})
		case *syntax.BinaryCmd:
			if x.Op == syntax.Pipe || x.Op == syntax.PipeAll {
				if w.pipeFeeders == nil {
					w.pipeFeeders = make(map[*syntax.Stmt]bool)
				}
				w.pipeFeeders[x.X] = true
			}
		case *syntax.CallExpr:
			cm := w.callCommand(x)
			for _, n := range stack {
				switch y := n.(type) {
				case *syntax.CmdSubst, *syntax.ProcSubst:
					cm.feeds = true
				case *syntax.Stmt:
					cm.feeds = cm.feeds || w.pipeFeeders[y]
				}
			}
			w.segment(cm)
		case *syntax.DeclClause:
			w.segment(w.declCommand(x))
		case *syntax.TestClause:
			w.segment(w.rawCommand(x))
			w.testArithmetic(x)
		case *syntax.ArithmCmd:
			w.segment(w.rawCommand(x))
			w.arithmetic(x, x.X)
		case *syntax.LetClause:
			w.segment(w.rawCommand(x))
			for _, e := range x.Exprs {
				w.arithmetic(x, e)
			}
		case *syntax.ArithmExp:
			w.arithmetic(x, x.X)
		case *syntax.ForClause:
			w.forWords(x)
		case *syntax.CStyleLoop:
			for _, e := range []syntax.ArithmExpr{x.Init, x.Cond, x.Post} {
				w.arithmetic(x, e)
			}
		case *syntax.ParamExp:
			w.paramExp(x)
		case *syntax.Assign:
			if x.Index != nil {
				w.arithmetic(x, x.Index)
			}
		case *syntax.ArrayElem:
			if x.Index != nil {
				w.arithmetic(x, x.Index)
			}
		}
		return true
	})
	return w.out
}

// closeFrame finishes a substitution: unless every command inside was
// explicitly allowed, the substitution itself asks.
func (w *walker) closeFrame() {
	f := w.frames[len(w.frames)-1]
	w.frames = w.frames[:len(w.frames)-1]
	if f.explicit || w.a.eff.open {
		return
	}
	kind := "command substitution"
	if _, ok := f.node.(*syntax.ProcSubst); ok {
		kind = "process substitution"
	}
	w.hazard(w.text(f.node), "hazard: "+kind, "its output becomes part of another command; it runs without asking only when every command inside is explicitly allowed")
}

// hazard records an ask that only a whole-command grant lifts.
func (w *walker) hazard(seg, rule, why string) {
	if w.a.eff.open {
		return
	}
	w.a.reason(seg, rule, why, DecisionAsk)
	w.out.add(outcome{decision: DecisionAsk})
}

// segment evaluates one simple command and feeds the enclosing
// substitutions.
func (w *walker) segment(cm command) {
	cm.cwd, cm.cwdKnown = w.cwd, w.cwdKnown
	w.a.cwd, w.a.cwdKnown = w.cwd, w.cwdKnown
	o := w.a.evaluate(cm, w.depth)
	w.out.add(o)
	for _, f := range w.frames {
		f.explicit = f.explicit && o.decision == DecisionAllow && o.explicit
	}
	w.trackCd(cm)
}

// command is one simple command as the rules see it.
type command struct {
	display string   // its source text
	env     []word   // loader-variable assignments (NAME=value), part of the text
	envName []string // their names
	args    []word   // args[0] is the program; empty for assignments only
	argSrc  []string // source text of each arg
	assigns []word   // assignments of an assignment-only command
	raw     bool     // a [[ ]], (( )) or let: matched by its source text
	// envExec marks the env entries that come from the exec request's env
	// rather than from assignments written before the command.
	envExec []bool
	// feeds: its output becomes another command's input or words (a
	// substitution, or the left of a pipe), so even echo's words may be
	// paths another command opens.
	feeds bool
	// cwd is the directory the command runs in (relative paths resolve
	// against it); cwdKnown is false after a cd the policy cannot follow.
	cwd      string
	cwdKnown bool
}

func (w *walker) callCommand(x *syntax.CallExpr) command {
	cm := command{display: w.text(x)}
	if w.depth == 0 && len(x.Args) > 0 {
		for _, e := range w.a.execEnv {
			cm.env = append(cm.env, e.word)
			cm.envName = append(cm.envName, e.name)
			cm.envExec = append(cm.envExec, true)
		}
	}
	for _, as := range x.Assigns {
		val := assignWord(as)
		name := ""
		if as.Name != nil {
			name = as.Name.Value
		}
		if len(x.Args) == 0 {
			cm.assigns = append(cm.assigns, val)
		}
		if name != "" && isLoaderEnv(name) {
			cm.env = append(cm.env, val)
			cm.envName = append(cm.envName, name)
			cm.envExec = append(cm.envExec, false)
		}
	}
	for _, arg := range x.Args {
		cm.args = append(cm.args, renderWord(arg))
		cm.argSrc = append(cm.argSrc, w.text(arg))
	}
	return cm
}

// assignWord renders NAME=value (NAME+=value); arrays and indexes make the
// value unknown.
func assignWord(as *syntax.Assign) word {
	var b runeBuf
	if as.Name != nil {
		b.str(as.Name.Value)
		if as.Index != nil {
			b.wild()
		}
		if as.Append {
			b.lit('+')
		}
		if !as.Naked {
			b.lit('=')
		}
	}
	switch {
	case as.Array != nil:
		b.wild()
	case as.Value != nil:
		v := renderWord(as.Value)
		b.toks = append(b.toks, v.toks...)
		if !v.literal {
			b.unknown = true
		}
	}
	return word{toks: b.toks, literal: !b.unknown}
}

// declCommand turns bash's export/declare/local/readonly/typeset into a
// command: the variant is the program, each argument a word.
func (w *walker) declCommand(x *syntax.DeclClause) command {
	cm := command{display: w.text(x)}
	cm.args = append(cm.args, word{toks: []rune(x.Variant.Value), literal: true})
	cm.argSrc = append(cm.argSrc, x.Variant.Value)
	for _, as := range x.Args {
		cm.args = append(cm.args, assignWord(as))
		cm.argSrc = append(cm.argSrc, w.text(as))
	}
	return cm
}

// rawCommand matches [[ ]], (( )) and let by their source text.
func (w *walker) rawCommand(n syntax.Node) command {
	t := w.text(n)
	return command{display: t, args: []word{{toks: []rune(normalizePattern(t)), literal: true}}, argSrc: []string{t}, raw: true}
}

// trackCd follows cd so that relative redirections after it are resolved
// where they will land; a cd we cannot follow makes them unknown.
func (w *walker) trackCd(cm command) {
	if len(cm.args) == 0 || cm.raw {
		return
	}
	prog, ok := cm.args[0].text()
	if !ok || (prog != "cd" && prog != "pushd" && prog != "popd") {
		return
	}
	var target string
	for _, arg := range cm.args[1:] {
		s, lit := arg.text()
		if !lit {
			w.cwdKnown = false
			return
		}
		if strings.HasPrefix(s, "-") && s != "-" {
			continue
		}
		target = s
		break
	}
	if prog != "cd" || target == "" || target == "-" || strings.HasPrefix(target, "~") || !w.cwdKnown {
		w.cwdKnown = false
		return
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(w.cwd, target)
	}
	w.cwd = filepath.Clean(target)
}

// Redirection operators that write to their target.
var writeRedirs = map[syntax.RedirOperator]bool{
	syntax.RdrOut: true, syntax.AppOut: true, syntax.RdrInOut: true, syntax.DplOut: true,
	syntax.RdrClob: true, syntax.AppClob: true, syntax.RdrAll: true, syntax.RdrAllClob: true,
	syntax.AppAll: true, syntax.AppAllClob: true,
}

// harmlessTargets are devices a redirection may write to anywhere.
var harmlessTargets = setOf("/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty")

// isFdPath reports whether s is exactly /dev/fd/N.
func isFdPath(s string) bool {
	n, ok := strings.CutPrefix(s, "/dev/fd/")
	return ok && n != "" && strings.Trim(n, "0123456789") == ""
}

// redirects checks the files a statement's redirections write (like the
// write tool: outside the workspace asks, inside follows file_approval) and
// read (like the read tool).
func (w *walker) redirects(st *syntax.Stmt) {
	for _, r := range st.Redirs {
		if r.Word == nil {
			continue
		}
		seg := w.text(r)
		target := renderWord(r.Word)
		s, lit := target.text()
		var rs []Reason
		switch {
		case writeRedirs[r.Op]:
			if r.Op == syntax.DplOut && lit && (s == "-" || strings.Trim(s, "0123456789") == "") {
				continue // >&2: duplicates a descriptor
			}
			rs = w.a.writePath(seg, target, w.text(r.Word), w.cwd, w.cwdKnown, "the redirection")
			if r.Op == syntax.RdrInOut {
				rs = append(rs, w.a.readPath(seg, target, w.text(r.Word), w.cwd, w.cwdKnown, "the redirection")...)
			}
		case r.Op == syntax.RdrIn:
			rs = w.a.readPath(seg, target, w.text(r.Word), w.cwd, w.cwdKnown, "the redirection")
		default:
			continue // here-documents, here-strings, <&N
		}
		for _, x := range rs {
			w.a.reasons = append(w.a.reasons, x)
			w.out.add(outcome{decision: x.Decision})
		}
	}
}

// forWords checks the words of `for NAME in WORDS` as paths: their values
// reach the loop's commands through the variable.
func (w *walker) forWords(x *syntax.ForClause) {
	wi, ok := x.Loop.(*syntax.WordIter)
	if !ok {
		return
	}
	for _, item := range wi.Items {
		for _, r := range w.a.readPath(w.text(item), renderWord(item), w.text(item), w.cwd, w.cwdKnown, "the loop word") {
			w.a.reasons = append(w.a.reasons, r)
			w.out.add(outcome{decision: r.Decision})
		}
	}
}

// pathAsk records an ask about where a command writes; unlike hazards it
// applies under an open policy too, because it is about the workspace, not
// about hiding commands.
func (w *walker) pathAsk(seg, why string) {
	w.a.reason(seg, "path_restriction", why, DecisionAsk)
	w.out.add(outcome{decision: DecisionAsk})
}

// arithmetic: bash evaluates the value of a variable used in arithmetic as
// an expression, and `a[$(cmd)]` in that value runs cmd. Arithmetic that
// reads variables is therefore at least ask; plain numbers are fine.
func (w *walker) arithmetic(n syntax.Node, e syntax.ArithmExpr) {
	if e == nil || !arithmeticReadsVariables(e) {
		return
	}
	w.hazard(w.text(n), "hazard: arithmetic", "arithmetic evaluates variable values as expressions, which can run commands")
}

func arithmeticReadsVariables(e syntax.Node) bool {
	found := false
	syntax.Walk(e, func(n syntax.Node) bool {
		switch x := n.(type) {
		case *syntax.ParamExp, *syntax.CmdSubst, *syntax.ProcSubst:
			found = true
		case *syntax.Lit:
			if x.Value != "" && (x.Value[0] < '0' || x.Value[0] > '9') {
				found = true
			}
		}
		return !found
	})
	return found
}

// testArithmetic: [[ a -eq b ]] evaluates a and b arithmetically.
func (w *walker) testArithmetic(t *syntax.TestClause) {
	syntax.Walk(t.X, func(n syntax.Node) bool {
		if b, ok := n.(*syntax.BinaryTest); ok {
			switch b.Op {
			case syntax.TsEql, syntax.TsNeq, syntax.TsLeq, syntax.TsGeq, syntax.TsLss, syntax.TsGtr:
				if arithmeticReadsVariables(b.X) || arithmeticReadsVariables(b.Y) {
					w.hazard(w.text(b), "hazard: arithmetic", "[[ -eq ]] and friends evaluate variable values as expressions, which can run commands")
				}
			}
		}
		return true
	})
}

// paramExp flags subscripts and slices (arithmetic) and ${x@P}, which runs
// the substitutions stored in x.
func (w *walker) paramExp(x *syntax.ParamExp) {
	if x.Index != nil {
		w.arithmetic(x, x.Index)
	}
	if x.Slice != nil {
		w.arithmetic(x, x.Slice.Offset)
		w.arithmetic(x, x.Slice.Length)
	}
	if x.Exp != nil && x.Exp.Op == syntax.OtherParamOps && x.Exp.Word != nil && strings.Contains(x.Exp.Word.Lit(), "P") {
		w.hazard(w.text(x), "hazard: prompt expansion", "${var@P} expands the variable like a prompt, running any substitution stored in it")
	}
}
