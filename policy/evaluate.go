package policy

import (
	"path"
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
	hz := a.hazards(cm, prog, progLit, base, depth, &inner)
	for _, h := range hz {
		if a.eff.open {
			break
		}
		covered := false
		if h.triggers != nil {
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

// hazards lists what in the command can hide what runs, and evaluates the
// commands it runs in turn (adding them to inner).
func (a *analysis) hazards(cm command, prog string, progLit bool, base string, depth int, inner *outcome) []hazard {
	var hz []hazard
	for _, name := range cm.envName {
		hz = append(hz, hazard{"hazard: loader variable", name + " changes how programs are found or loaded", []string{name + "="}})
	}
	if len(cm.args) == 0 || cm.raw {
		return hz
	}
	if !progLit {
		return append(hz, hazard{"hazard: computed program", "the program name is only known at run time", nil})
	}
	args := cm.args[1:]
	argv := make([]string, len(args)) // literal values, "" for unknown words
	for i, w := range args {
		argv[i], _ = w.text()
	}

	// Builtins that set variables by name.
	if varSetters[base] {
		hz = append(hz, setterHazards(base, args, argv)...)
	}
	// Builtins that run code.
	if why, ok := codeBuiltins[base]; ok {
		hz = append(hz, hazard{"hazard: " + base, why, []string{base}})
		switch base {
		case "eval":
			inner.add(a.code(cm, 1, len(cm.args), depth))
		case "trap":
			if ops := operands(argv, nil); len(ops) >= 2 {
				inner.add(a.code(cm, ops[0]+1, ops[0]+2, depth))
			}
		case "alias":
			for i, s := range argv {
				if _, v, ok := strings.Cut(s, "="); ok && args[i].literal {
					inner.add(a.nested(v, depth))
				}
			}
		}
	}
	// Interpreters given code.
	if in, name, ok := interpreterFor(base); ok {
		hz = append(hz, a.interpreterHazards(cm, in, name, argv, depth, inner)...)
	}
	if base == "git" {
		if t, ok := gitCodeTrigger(argv); ok {
			hz = append(hz, hazard{"hazard: git runs code", "git " + t + " makes git run a command given as configuration or an argument", []string{t}})
		}
	}
	if base == "deno" && len(argv) > 0 && argv[0] == "eval" {
		hz = append(hz, hazard{"hazard: code string", "deno eval runs code given as a string", []string{"eval"}})
	}
	// Wrappers run the rest of their arguments as a command.
	if wr, ok := wrappers[base]; ok {
		if base == "exec" && len(argv) > 0 {
			hz = append(hz, hazard{"hazard: exec", "exec replaces the shell with another program", []string{"exec"}})
		}
		hz = append(hz, a.unwrap(cm, base, wr, argv, depth, inner)...)
	}
	if base == "find" {
		a.findExec(cm, argv, depth, inner)
	}
	return hz
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
				hz = append(hz, hazard{"hazard: computed variable", base + " sets a variable named only at run time", nil})
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
			hz = append(hz, hazard{"hazard: loader variable", base + " sets " + name + ", which changes how programs are found or loaded", []string{trigger}})
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
// other.
func (a *analysis) nested(src string, depth int) outcome {
	return a.command(src, depth+1)
}

// interpreterHazards finds code given to an interpreter as a string (-c,
// -e, --eval) or on standard input.
func (a *analysis) interpreterHazards(cm command, in interpreter, name string, argv []string, depth int, inner *outcome) []hazard {
	for i := 0; i < len(argv); i++ {
		s := argv[i]
		if !cm.args[i+1].literal {
			if cm.args[i+1].procSubst {
				return a.stdinHazard(in, name, []string{cm.argSrc[i+1]})
			}
			return nil // a script named at run time: like any script operand
		}
		switch {
		case s == "--":
			if i+1 < len(argv) {
				return nil
			}
			return a.stdinHazard(in, name, []string{name})
		case s == "-":
			return a.stdinHazard(in, name, []string{"-"})
		case strings.HasPrefix(s, "-") || (in.shell && strings.HasPrefix(s, "+")):
			opt, _, hasValue := strings.Cut(s, "=")
			for _, l := range in.codeLong {
				if strings.EqualFold(opt, l) {
					return []hazard{{"hazard: code string", name + " " + opt + " runs code given as a string", []string{s}}}
				}
			}
			if containsWord(in.stopOpts, s) {
				return nil
			}
			if containsWord(in.argOpts, opt) {
				if !hasValue {
					i++
				}
				continue
			}
			if strings.HasPrefix(s, "--") || len(in.codeLetters) == 0 {
				continue
			}
			if strings.ContainsAny(s[1:], in.codeLetters) {
				if in.shell && i+1 < len(argv) {
					inner.add(a.code(cm, i+2, i+3, depth))
				}
				return []hazard{{"hazard: code string", name + " " + s + " runs code given as a string", []string{s}}}
			}
			if in.shell && strings.Contains(s[1:], "s") {
				return a.stdinHazard(in, name, []string{s})
			}
		case stdinPaths[s] || strings.HasPrefix(s, "/dev/fd/") || strings.HasPrefix(s, "/proc/self/fd/"):
			return a.stdinHazard(in, name, []string{s})
		default:
			return nil // a script file: like running any program
		}
	}
	return a.stdinHazard(in, name, []string{name})
}

// stdinPaths name standard input as a file: a script read from there is code
// given on the command line (a here-string, a pipe).
var stdinPaths = setOf("/dev/stdin", "/proc/self/fd/0")

func (a *analysis) stdinHazard(in interpreter, name string, triggers []string) []hazard {
	if !in.stdin {
		return nil
	}
	return []hazard{{"hazard: code on stdin", name + " without a script reads the code to run from standard input", triggers}}
}

// unwrap evaluates the command a wrapper runs (timeout 5 CMD...). The
// wrapper itself must be allowed too; as a backstop against option parsing
// going wrong, every later word is also tried as the start of a command
// against the deny and ask rules.
func (a *analysis) unwrap(cm command, base string, wr wrapper, argv []string, depth int, inner *outcome) []hazard {
	var hz []hazard
	args := cm.args[1:]
	start := -1
	skip := wr.skip
	for i := 0; i < len(argv); i++ {
		s := argv[i]
		if !args[i].literal {
			start = i
			break
		}
		if s == "--" {
			start = i + 1
			break
		}
		if strings.HasPrefix(s, "-") && len(s) > 1 {
			opt, _, hasValue := strings.Cut(s, "=")
			if !hasValue && len(opt) > 2 && opt[1] != '-' && containsWord(wr.codeOpts, opt[:2]) {
				// -S'code', -c'code': the code is attached to the option
				hz = append(hz, hazard{"hazard: code string", base + " " + opt[:2] + " runs code given as a string", []string{s}})
				inner.add(a.nested(opt[2:], depth))
				return hz
			}
			if containsWord(wr.codeOpts, opt) {
				hz = append(hz, hazard{"hazard: code string", base + " " + opt + " runs code given as a string", []string{s}})
				if hasValue {
					_, v, _ := strings.Cut(s, "=")
					inner.add(a.nested(v, depth))
				} else if i+1 < len(argv) {
					inner.add(a.code(cm, i+2, i+3, depth))
				}
				return hz
			}
			if !hasValue && containsWord(wr.argOpts, opt) {
				i++
			}
			continue
		}
		if wr.setsEnv {
			if name, ok := assignmentName(s); ok {
				if isLoaderEnv(name) {
					hz = append(hz, hazard{"hazard: loader variable", base + " sets " + name + ", which changes how programs are found or loaded", []string{name + "="}})
				}
				continue
			}
		}
		if skip > 0 {
			skip--
			continue
		}
		start = i
		break
	}
	if shellCodeOperands[base] {
		hz = append(hz, hazard{"hazard: code string", base + " runs its arguments as shell code", []string{base}})
		if start >= 0 {
			inner.add(a.code(cm, start+1, len(cm.args), depth))
		}
		return hz
	}
	if start < 0 || start >= len(args) {
		if wr.defaultTo == "" {
			return hz
		}
		sub := command{display: wr.defaultTo, args: []word{literalWord(wr.defaultTo), {toks: []rune{wildcard}}}, argSrc: []string{wr.defaultTo, ""}}
		inner.add(a.evaluate(sub, depth))
		return hz
	}
	sub := a.subcommand(cm, start+1, len(cm.args))
	if wr.moreInput {
		sub.args = append(sub.args, word{toks: []rune{wildcard}})
		sub.argSrc = append(sub.argSrc, "")
	}
	inner.add(a.evaluate(sub, depth))
	a.restrictiveSuffixes(cm, 1)
	return hz
}

// subcommand is cm.args[from:to] as a command of its own.
func (a *analysis) subcommand(cm command, from, to int) command {
	sub := command{args: append([]word(nil), cm.args[from:to]...), argSrc: cm.argSrc[from:to]}
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

// findExec evaluates the commands find runs with -exec, -execdir, -ok and
// -okdir; {} (the file found) is unknown.
func (a *analysis) findExec(cm command, argv []string, depth int, inner *outcome) {
	for i := 0; i < len(argv); i++ {
		if !findExecActions[argv[i]] {
			continue
		}
		from := i + 1
		to := from
		for to < len(argv) && argv[to] != ";" && argv[to] != "+" {
			to++
		}
		if from >= to {
			continue
		}
		sub := a.subcommand(cm, from+1, to+1)
		for k, w := range sub.args {
			if s, ok := w.text(); ok && strings.Contains(s, "{}") {
				sub.args[k] = word{toks: collapseWild([]rune(strings.ReplaceAll(s, "{}", "\x00")))}
			}
		}
		inner.add(a.evaluate(sub, depth))
		i = to
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
