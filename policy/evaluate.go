package policy

import (
	"path"
	"regexp"
	"strings"
)

// hazard is something in a simple command that can hide what runs.
type hazard struct {
	rule string
	why  string
	// triggers are the words an allow rule or grant must name (as a `*`-free
	// word) to allow the hazard explicitly, e.g. ["-e"] for node -e; nil means
	// no rule can, only a grant of the whole command.
	triggers []string
	// exact: only an allow rule or grant without `*` that matches the
	// command lifts it (a stdin-reading interpreter with no script: the rule
	// must name that very form, `node` or `sh -x`, not `node *`).
	exact bool
}

// maxVanishSingles bounds the texts tried one vanished word at a time.
const maxVanishSingles = 8

// maxWrappedSuffixes bounds how many later words of a wrapper are tried as
// the start of a command.
const maxWrappedSuffixes = 64

// variants returns the texts a command can take: as written, and with the
// words that may vanish (see word.mayVanish) removed one at a time and all
// together.
func variants(words []word) [][]rune {
	out := [][]rune{joinText(words)}
	var vanish []int
	for i, w := range words {
		if w.mayVanish && i > 0 {
			vanish = append(vanish, i)
		}
	}
	if len(vanish) == 0 {
		return out
	}
	without := func(skip func(int) bool) []rune {
		kept := make([]word, 0, len(words))
		for i, w := range words {
			if !skip(i) {
				kept = append(kept, w)
			}
		}
		return joinText(kept)
	}
	out = append(out, without(func(i int) bool { return words[i].mayVanish && i > 0 }))
	if len(vanish) > 1 && len(vanish) <= maxVanishSingles {
		for _, v := range vanish {
			out = append(out, without(func(i int) bool { return i == v }))
		}
	}
	return out
}

func coversAll(p []rune, texts [][]rune) bool {
	for _, t := range texts {
		if !covers(p, t) {
			return false
		}
	}
	return true
}

func overlapsAny(p []rune, texts [][]rune) bool {
	for _, t := range texts {
		if overlaps(p, t) {
			return true
		}
	}
	return false
}

// joinText joins words with single spaces into matchable text.
func joinText(groups ...[]word) []rune {
	var out []rune
	first := true
	for _, g := range groups {
		for _, w := range g {
			if !first {
				out = append(out, ' ')
			}
			first = false
			out = append(out, w.toks...)
		}
	}
	return out
}

func literalWord(s string) word { return word{toks: []rune(s), literal: true} }

// evaluate decides one simple command: rules, grants, hazards, the network
// capability, and what it runs in turn (wrappers, find -exec, code strings).
func (a *analysis) evaluate(cm command, depth int) outcome {
	var words []word
	switch {
	case len(cm.args) > 0:
		words = append(append(words, cm.env...), cm.args...)
	case len(cm.assigns) > 0:
		words = cm.assigns
	default:
		return newOutcome()
	}
	texts := variants(words) // texts[0] is the command as written
	prog, progLit := "", false
	if len(cm.args) > 0 && !cm.raw {
		prog, progLit = cm.args[0].text()
		if strings.ContainsAny(prog, " \t\n") || prog == "" {
			// "ls -la" in quotes is a program named "ls -la", not ls: never
			// read it as the words it looks like.
			prog, progLit = "", false
		}
	}
	base := baseName(prog)
	// Texts for restrictive rules: the program by its base name, in lower
	// case (RM runs rm on a case-insensitive file system).
	rtexts := texts
	if lower := strings.ToLower(base); progLit && lower != prog {
		rwords := append([]word(nil), words...)
		rwords[len(cm.env)] = literalWord(lower)
		rtexts = variants(rwords)
	}

	// Rules.
	seg := cm.display
	rs, denyHit, askHit := a.restrictive(seg, rtexts, "")
	add := func(d Decision, rule, why string) {
		rs = append(rs, Reason{Segment: seg, Rule: rule, Why: why, Decision: d})
	}
	// Allow rules match the program as written; a program in a system
	// directory (/usr/bin/ls) is also that program by its base name, but
	// ./ls or /tmp/ls never are.
	atexts := [][][]rune{texts}
	if progLit && base != prog && systemBinDirs[path.Dir(prog)] && path.Clean(prog) == prog {
		bwords := append([]word(nil), words...)
		bwords[len(cm.env)] = literalWord(base)
		atexts = append(atexts, variants(bwords))
	}
	var allowBy, grantBy []*pattern
	for i := range a.p.allow {
		for _, t := range atexts {
			if coversAll(a.p.allow[i].strict, t) {
				allowBy = append(allowBy, &a.p.allow[i])
				break
			}
		}
	}
	for i := range a.grants {
		for _, t := range atexts {
			if coversAll(a.grants[i].strict, t) {
				grantBy = append(grantBy, &a.grants[i])
				break
			}
		}
	}
	granted := len(grantBy) > 0
	if granted { // a grant lifts every ask of the rules, never a deny
		kept := rs[:0]
		for _, r := range rs {
			if r.Decision == DecisionDeny {
				kept = append(kept, r)
			}
		}
		rs = kept
	}
	switch {
	case len(allowBy) > 0:
		add(DecisionAllow, allowBy[0].rule, "matches an allow rule")
	case granted:
		add(DecisionAllow, grantBy[0].rule, "a person allowed it always")
	case !denyHit && !askHit: // nothing matches (a possible deny match is not a match)
		add(a.eff.commandDefault.decision, a.eff.commandDefault.rule, "no rule matches")
	}

	// Hazards.
	inner := newOutcome()
	info := newArgInfo(len(cm.args))
	hz := a.hazards(cm, prog, progLit, base, depth, &inner, info)
	for _, h := range hz {
		if a.eff.open {
			break
		}
		covered := false
		switch {
		case h.exact:
			for _, p := range grantBy {
				covered = covered || p.exact
			}
			if !askHit {
				for _, p := range allowBy {
					covered = covered || p.exact
				}
			}
		case h.triggers != nil:
			for _, p := range grantBy {
				covered = covered || p.names(h.triggers)
			}
			if !askHit {
				for _, p := range allowBy {
					covered = covered || p.names(h.triggers)
				}
			}
		}
		if !covered {
			add(DecisionAsk, h.rule, h.why)
		}
	}

	// Files it reads and writes: path-like arguments, and what its model found.
	rs = append(rs, a.fileReasons(cm, base, info)...)

	// The network capability.
	if progLit && a.eff.network != nil && a.eff.network.decision != DecisionAllow && !(a.c.Env.normalize() == EnvDocker && dockerOffline(a.c.Network)) {
		var argv []string
		for _, w := range cm.args[1:] {
			s, _ := w.text()
			argv = append(argv, s)
		}
		if why, ok := networkReason(base, argv); ok {
			if a.eff.network.decision == DecisionDeny || !granted {
				add(a.eff.network.decision, a.eff.network.rule, why)
			}
		}
	}

	// Keep the reasons at this segment's decision.
	d := DecisionAllow
	for _, r := range rs {
		d = d.Stricter(r.Decision)
	}
	for _, r := range rs {
		if r.Decision == d {
			a.reasons = append(a.reasons, r)
		}
	}
	out := outcome{decision: d, explicit: d == DecisionAllow && (len(allowBy) > 0 || granted)}
	out.add(inner)
	return out
}

// restrictive matches the deny and ask rules against the texts of a
// segment (texts[0] as written): a definite deny match denies, a match the
// run-time parts could make asks, an ask match asks.
func (a *analysis) restrictive(seg string, texts [][]rune, what string) (rs []Reason, denyHit, askHit bool) {
	for i := range a.p.deny {
		d := &a.p.deny[i]
		if covers(d.loose, texts[0]) {
			denyHit = true
			rs = append(rs, Reason{Segment: seg, Rule: d.rule, Why: what + "matches a deny rule", Decision: DecisionDeny})
		} else if overlapsAny(d.loose, texts) {
			rs = append(rs, Reason{Segment: seg, Rule: d.rule, Why: what + "could match this deny rule once the parts known only at run time are filled in", Decision: DecisionAsk})
		}
	}
	for i := range a.p.ask {
		q := &a.p.ask[i]
		if overlapsAny(q.loose, texts) {
			askHit = true
			rs = append(rs, Reason{Segment: seg, Rule: q.rule, Why: what + "matches an ask rule", Decision: DecisionAsk})
		}
	}
	return rs, denyHit, askHit
}

// hazards lists what in the command can hide what runs, evaluates the
// commands it runs in turn (adding them to inner), and records in info the
// files its model says it reads and writes.
func (a *analysis) hazards(cm command, prog string, progLit bool, base string, depth int, inner *outcome, info *argInfo) []hazard {
	var hz []hazard
	for k, name := range cm.envName {
		if k < len(cm.envExec) && cm.envExec[k] {
			hz = append(hz, hazard{RuleExecEnv, "the exec request's env sets " + name + ", which changes how programs are found or loaded", []string{name + "="}, false})
			continue
		}
		hz = append(hz, hazard{"hazard: loader variable", name + " changes how programs are found or loaded", []string{name + "="}, false})
	}
	if len(cm.args) == 0 || cm.raw {
		info.noPaths = true
		return hz
	}
	if !progLit {
		return append(hz, hazard{"hazard: computed program", "the program name is only known at run time", nil, false})
	}
	args := cm.args[1:]
	argv := make([]string, len(args)) // literal values, "" for unknown words
	for i, w := range args {
		argv[i], _ = w.text()
	}
	if noFileArgs[base] && !cm.feeds {
		info.noPaths = true
	}

	// Builtins that set variables by name.
	if varSetters[base] {
		hz = append(hz, setterHazards(base, args, argv)...)
		info.noPaths = true
	}
	// Builtins that run code.
	if why, ok := codeBuiltins[base]; ok {
		hz = append(hz, hazard{"hazard: " + base, why, []string{base}, false})
		switch base {
		case "eval":
			info.exemptFrom(1)
			inner.add(a.code(cm, 1, len(cm.args), depth))
		case "trap":
			info.exemptFrom(1)
			if ops := operands(argv, nil); len(ops) >= 2 {
				inner.add(a.code(cm, ops[0]+1, ops[0]+2, depth))
			}
		case "alias":
			info.exemptFrom(1)
			for i, s := range argv {
				if _, v, ok := strings.Cut(s, "="); ok && args[i].literal {
					inner.add(a.nested(v, depth))
				}
			}
		}
	}
	// Interpreters given code.
	if spec, ok := specInterpreters[interpreterName(base)]; ok {
		hz = append(hz, a.specInterpreterHazards(cm, spec, interpreterName(base), depth, inner, info)...)
	} else if in, name, ok := interpreterFor(base); ok {
		hz = append(hz, a.interpreterHazards(cm, in, name, argv, depth, inner, info)...)
	}
	if base == "deno" && len(argv) > 0 && argv[0] == "eval" {
		hz = append(hz, hazard{"hazard: code string", "deno eval runs code given as a string", []string{"eval"}, false})
	}
	// Programs that run code or write files through their options.
	switch {
	case base == "git":
		hz = append(hz, a.gitModel(cm, info)...)
	case base == "sed" || base == "gsed":
		hz = append(hz, a.sedModel(cm, info)...)
	case awkNames[base]:
		hz = append(hz, a.awkModel(cm, base, info)...)
	case base == "tar" || base == "gtar" || base == "bsdtar":
		hz = append(hz, a.tarModel(cm, info)...)
	case base == "find" || base == "gfind":
		hz = append(hz, a.findModel(cm, depth, inner, info)...)
	}
	// Wrappers run the rest of their arguments as a command.
	if wr, ok := wrappers[base]; ok {
		if base == "exec" && len(argv) > 0 {
			hz = append(hz, hazard{"hazard: exec", "exec replaces the shell with another program", []string{"exec"}, false})
		}
		hz = append(hz, a.unwrap(cm, base, wr, depth, inner, info)...)
	}
	return hz
}

// awkNames are the awk implementations modelled by awkModel.
var awkNames = setOf("awk", "gawk", "mawk", "nawk", "original-awk", "busybox-awk")

// noFileArgs are programs whose arguments are never opened as files, so
// they are not checked as paths (echo /etc/passwd reads nothing) unless
// their output feeds another command: cat "$(echo /etc/shadow)" and
// echo /etc/shadow | xargs cat are checked.
var noFileArgs = setOf("echo", "printf", "true", "false", ":", "yes", "seq", "sleep", "expr",
	"basename", "dirname", "test", "[", "exit", "return", "shift", "set", "unset", "wait", "kill",
	"jobs", "fg", "bg", "umask", "type", "which", "hash", "getopts", "break", "continue")

// interpreterName folds versioned interpreter names (python3.12, nodejs).
func interpreterName(base string) string {
	if _, name, ok := interpreterFor(base); ok {
		return name
	}
	return base
}

// setterHazards flags loader variables set through export, declare, read,
// printf -v and friends, and variables named only at run time.
func setterHazards(base string, args []word, argv []string) []hazard {
	var hz []hazard
	for i, s := range argv {
		if base == "printf" && (i == 0 || argv[i-1] != "-v") {
			continue
		}
		if !args[i].literal {
			if base != "printf" && base != "let" {
				hz = append(hz, hazard{"hazard: computed variable", base + " sets a variable named only at run time", nil, false})
			}
			continue
		}
		name := s
		if n, ok := assignmentName(s); ok {
			name = n
			if _, v, _ := strings.Cut(s, "="); isLoaderEnv(v) {
				name = v // declare -n ref=PATH: ref becomes PATH
			}
		}
		if isLoaderEnv(name) {
			trigger := name
			if name != s {
				trigger = name + "="
			}
			hz = append(hz, hazard{"hazard: loader variable", base + " sets " + name + ", which changes how programs are found or loaded", []string{trigger}, false})
		}
	}
	return hz
}

// operands returns the indexes of the non-option arguments (options are
// words starting with - before the first operand; argOpts take a value).
func operands(argv []string, argOpts []string) []int {
	var out []int
	opts := true
	for i := 0; i < len(argv); i++ {
		s := argv[i]
		if opts {
			if s == "--" {
				opts = false
				continue
			}
			if strings.HasPrefix(s, "-") && len(s) > 1 {
				name, _, hasValue := strings.Cut(s, "=")
				if !hasValue && containsWord(argOpts, name) {
					i++
				}
				continue
			}
			opts = false
		}
		out = append(out, i)
	}
	return out
}

// code analyses cm.args[from:to] joined by spaces as shell code, when every
// word is known; otherwise the code is unknown and the hazard stands alone.
func (a *analysis) code(cm command, from, to, depth int) outcome {
	if from >= to || to > len(cm.args) {
		return newOutcome()
	}
	parts := make([]string, 0, to-from)
	for _, w := range cm.args[from:to] {
		s, ok := w.text()
		if !ok {
			return outcome{decision: DecisionAsk}
		}
		parts = append(parts, s)
	}
	return a.nested(strings.Join(parts, " "), depth)
}

// nested analyses code found in a string; its segments are reported like any
// other. It runs in the directory of the command that holds it.
func (a *analysis) nested(src string, depth int) outcome {
	return a.command(src, depth+1)
}

// nestedIn analyses code that runs in another directory (env -C DIR -S ...).
func (a *analysis) nestedIn(src string, depth int, cwd string, cwdKnown bool) outcome {
	saved, savedKnown := a.cwd, a.cwdKnown
	a.cwd, a.cwdKnown = cwd, cwdKnown
	defer func() { a.cwd, a.cwdKnown = saved, savedKnown }()
	return a.command(src, depth+1)
}

// interpreterHazards finds code given to an interpreter as a string (-c,
// -e, --eval) or on standard input, for the interpreters without a full
// option spec (perl, ruby, php, lua, zsh, fish, ...).
func (a *analysis) interpreterHazards(cm command, in interpreter, name string, argv []string, depth int, inner *outcome, info *argInfo) []hazard {
	for i := 0; i < len(argv); i++ {
		s := argv[i]
		if !cm.args[i+1].literal {
			if cm.args[i+1].procSubst {
				return a.stdinHazard(in, name, []string{cm.argSrc[i+1]}, false)
			}
			return nil // a script named at run time: like any script operand
		}
		switch {
		case s == "--":
			if i+1 < len(argv) {
				return nil
			}
			return a.stdinHazard(in, name, nil, true)
		case s == "-":
			return a.stdinHazard(in, name, []string{"-"}, false)
		case strings.HasPrefix(s, "-") || (in.shell && strings.HasPrefix(s, "+")):
			info.exempt[i+1] = true
			opt, _, hasValue := strings.Cut(s, "=")
			for _, l := range in.codeLong {
				if strings.EqualFold(opt, l) {
					info.exemptFrom(i + 1)
					return []hazard{{"hazard: code string", name + " " + opt + " runs code given as a string", []string{s}, false}}
				}
			}
			if containsWord(in.stopOpts, s) {
				return nil
			}
			if name == "perl" && len(s) > 2 && (s[1] == 'M' || s[1] == 'm') && !perlModuleArg.MatchString(s[2:]) {
				info.exemptFrom(i + 1)
				return []hazard{{"hazard: code string", "perl " + s[:2] + " with " + s[2:] + " runs code given as a string (perl turns it into `use " + s[2:] + "`)", []string{s}, false}}
			}
			if containsWord(in.argOpts, opt) {
				if !hasValue {
					i++
					if i < len(argv) {
						info.exempt[i+1] = true
					}
				}
				continue
			}
			if strings.HasPrefix(s, "--") || len(in.codeLetters) == 0 {
				continue
			}
			if strings.ContainsAny(s[1:], in.codeLetters) {
				info.exemptFrom(i + 1)
				if in.shell && i+1 < len(argv) {
					inner.add(a.code(cm, i+2, i+3, depth))
				}
				return []hazard{{"hazard: code string", name + " " + s + " runs code given as a string", []string{s}, false}}
			}
			if in.shell && strings.Contains(s[1:], "s") {
				return a.stdinHazard(in, name, []string{s}, false)
			}
		case stdinPaths[s] || strings.HasPrefix(s, "/dev/fd/") || strings.HasPrefix(s, "/proc/self/fd/"):
			return a.stdinHazard(in, name, []string{s}, false)
		default:
			return nil // a script file: like running any program
		}
	}
	return a.stdinHazard(in, name, nil, true)
}

// perlModuleArg is what perl -M/-m may be followed by without running code
// of the command's own: a module name, optionally =import,list.
var perlModuleArg = regexp.MustCompile(`^-?[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z0-9_]+)*(=[A-Za-z0-9_,:]*)?$`)

// stdinPaths name standard input as a file: a script read from there is code
// given on the command line (a here-string, a pipe).
var stdinPaths = setOf("/dev/stdin", "/proc/self/fd/0")

// stdinHazard: the interpreter reads the code it runs from standard input.
// With exact, no script was given at all, and only an allow rule or grant
// without `*` lifts it (`node` or `sh -x` name that form; `node *` does
// not); otherwise the triggers (`-`, `/dev/stdin`, `-s`) must be named.
func (a *analysis) stdinHazard(in interpreter, name string, triggers []string, exact bool) []hazard {
	if !in.stdin {
		return nil
	}
	why := name + " without a script reads the code to run from standard input"
	if exact {
		why += "; only an allow rule without * for this exact command lifts it"
	} else if len(triggers) > 0 {
		why = name + " " + triggers[0] + " reads the code to run from standard input"
	}
	return []hazard{{"hazard: code on stdin", why, triggers, exact}}
}

// unwrap evaluates the command a wrapper runs (timeout 5 CMD...). The
// wrapper itself must be allowed too. Its options are parsed completely; an
// option it does not know asks. As a backstop against option parsing
// going wrong, every later word is also tried as the start of a command
// against the deny and ask rules.
func (a *analysis) unwrap(cm command, base string, wr wrapper, depth int, inner *outcome, info *argInfo) []hazard {
	var hz []hazard
	args := cm.args[1:]
	info.exemptFrom(1) // the wrapped command's words are checked by its own evaluation
	ps := wr.spec.parse(args)
	if len(ps.unknown) > 0 {
		for _, u := range ps.unknown {
			hz = append(hz, hazard{"hazard: unknown option", base + " " + u + " is an option the policy does not know, so it cannot tell which word is the command", nil, false})
		}
		a.restrictiveSuffixes(cm, 1)
		return hz
	}
	wordAt := func(i int) string { s, _ := args[i].text(); return s }
	noCmd, shell, edit := false, false, false
	sub := command{cwd: cm.cwd, cwdKnown: cm.cwdKnown}
	var code *parsedOpt
	for k := range ps.opts {
		o := &ps.opts[k]
		switch o.def.role {
		case roleCode:
			if code == nil {
				code = o
			}
		case roleWrite, roleRead:
			info.useValue(cm, *o, o.def.role == roleWrite, base+" "+o.written)
		case roleChdir:
			info.useValue(cm, *o, false, base+" "+o.written+" (runs the command in this directory)")
			if o.valueLit && sub.cwdKnown {
				sub.cwd = joinCwd(sub.cwd, o.value)
			} else {
				sub.cwdKnown = false
			}
		case roleLoader:
			hz = append(hz, hazard{"hazard: loader variable", base + " " + o.written + " changes where the command is looked up", []string{wordAt(o.index)}, false})
		case roleNoCommand:
			noCmd = true
		case roleShell:
			shell = true
		case roleEdit:
			edit = true
		}
	}
	if code != nil {
		hz = append(hz, hazard{"hazard: code string", base + " " + code.written + " runs code given as a string", []string{wordAt(code.index)}, false})
		if !code.valueLit || !code.hasValue {
			inner.add(outcome{decision: DecisionAsk})
		} else {
			src := code.value
			if base == "env" { // env -S 'a b' c d runs a b c d
				for i := ps.operand; i < len(args); i++ {
					s, ok := args[i].text()
					if !ok {
						inner.add(outcome{decision: DecisionAsk})
						break
					}
					src += " " + s
				}
			}
			inner.add(a.nestedIn(src, depth, sub.cwd, sub.cwdKnown))
		}
		a.restrictiveSuffixes(cm, 1)
		return hz
	}
	i := ps.operand
	if wr.setsEnv {
		for ; i < len(args); i++ {
			s, ok := args[i].text()
			if !ok {
				break
			}
			name, isAssign := assignmentName(s)
			if !isAssign {
				break
			}
			if isLoaderEnv(name) {
				hz = append(hz, hazard{"hazard: loader variable", base + " sets " + name + ", which changes how programs are found or loaded", []string{name + "="}, false})
			}
		}
	}
	for k := 0; k < wr.skip && i < len(args); k++ {
		if wr.skipRole == roleWrite || wr.skipRole == roleRead {
			info.use(cm, i+1, wr.skipRole == roleWrite, base+" operand")
		}
		if base == "chroot" {
			sub.cwdKnown = false
		}
		i++
	}
	if len(wr.postCode) > 0 && i < len(args) && containsWord(wr.postCode, wordAt(i)) {
		hz = append(hz, hazard{"hazard: code string", base + " " + wordAt(i) + " runs code given as a string", []string{wordAt(i)}, false})
		if i+1 < len(args) {
			inner.add(a.code(cm, i+2, i+3, depth))
		}
		a.restrictiveSuffixes(cm, 1)
		return hz
	}
	stdinShell := func(why string) []hazard {
		return append(hz, hazard{"hazard: code on stdin", why, nil, true})
	}
	switch {
	case noCmd:
		return hz // its operands are process ids or names: nothing runs
	case wr.fileOperand:
		if i < len(args) {
			info.use(cm, i+1, true, base+" (writes the session to this file)")
		}
		return stdinShell(base + " without -c starts a shell that reads the commands to run from standard input")
	case shell:
		if i >= len(args) {
			return stdinShell(base + " with a shell option and no command starts a shell that reads standard input")
		}
		hz = append(hz, hazard{"hazard: code string", base + " runs the command through a shell, which reads it as shell code", []string{base}, false})
		inner.add(a.code(cm, i+1, len(cm.args), depth))
		a.restrictiveSuffixes(cm, 1)
		return hz
	case edit:
		for k := i; k < len(args); k++ {
			info.use(cm, k+1, true, base+" -e (edits this file)")
		}
		return append(hz, hazard{"hazard: code string", base + " -e runs an editor, which can run commands", nil, false})
	case wr.shellCode && !(base == "watch" && watchExec(ps)):
		hz = append(hz, hazard{"hazard: code string", base + " runs its arguments as shell code", []string{base}, false})
		if i < len(args) {
			inner.add(a.code(cm, i+1, len(cm.args), depth))
		}
		return hz
	case wr.shellArgs:
		if i >= len(args) {
			return stdinShell(base + " with no command starts a shell that reads standard input")
		}
		shellSub := command{args: append([]word{literalWord("sh")}, args[i:]...), argSrc: append([]string{"sh"}, cm.argSrc[i+1:]...), cwd: sub.cwd, cwdKnown: sub.cwdKnown}
		shellSub.display = strings.Join(shellSub.argSrc, " ")
		inner.add(a.evaluate(shellSub, depth))
		a.restrictiveSuffixes(cm, 1)
		return hz
	}
	if i >= len(args) {
		if wr.stdinShell {
			return stdinShell(base + " with no command starts a shell that reads standard input")
		}
		if wr.defaultTo == "" {
			return hz
		}
		def := command{display: wr.defaultTo, args: []word{literalWord(wr.defaultTo), {toks: []rune{wildcard}}}, argSrc: []string{wr.defaultTo, ""}, cwd: sub.cwd, cwdKnown: sub.cwdKnown}
		inner.add(a.evaluate(def, depth))
		return hz
	}
	run := a.subcommand(cm, i+1, len(cm.args))
	run.cwd, run.cwdKnown = sub.cwd, sub.cwdKnown
	if wr.moreInput {
		run.args = append(run.args, word{toks: []rune{wildcard}})
		run.argSrc = append(run.argSrc, "")
	}
	inner.add(a.evaluate(run, depth))
	a.restrictiveSuffixes(cm, 1)
	return hz
}

// watchExec reports whether watch was given -x (--exec): it then runs its
// operands as a command, not as shell code.
func watchExec(ps optParse) bool {
	for _, o := range ps.opts {
		if o.def.short == 'x' {
			return true
		}
	}
	return false
}

// subcommand is cm.args[from:to] as a command of its own.
func (a *analysis) subcommand(cm command, from, to int) command {
	sub := command{args: append([]word(nil), cm.args[from:to]...), argSrc: cm.argSrc[from:to], cwd: cm.cwd, cwdKnown: cm.cwdKnown, feeds: cm.feeds}
	sub.display = strings.Join(sub.argSrc, " ")
	return sub
}

// restrictiveSuffixes tries every later word of a wrapper as the start of a
// command against the deny and ask rules only.
func (a *analysis) restrictiveSuffixes(cm command, from int) {
	for i := from; i < len(cm.args) && i < from+maxWrappedSuffixes; i++ {
		s, ok := cm.args[i].text()
		if !ok || strings.HasPrefix(s, "-") {
			continue
		}
		head := strings.ToLower(baseName(s))
		if !a.p.heads[head] && !a.p.anyHead {
			continue // no ask or deny rule starts with this program
		}
		sub := a.subcommand(cm, i, len(cm.args))
		sub.args[0] = literalWord(head)
		rs, _, _ := a.restrictive(sub.display, variants(sub.args), "a wrapped command ")
		a.reasons = append(a.reasons, rs...)
	}
}

// collapseWild turns NUL markers into wildcards.
func collapseWild(rs []rune) []rune {
	out := rs[:0]
	for _, r := range rs {
		if r == 0 {
			r = wildcard
		}
		out = append(out, r)
	}
	return out
}
