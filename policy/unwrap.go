package policy

import "strings"

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
