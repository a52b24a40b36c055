package policy

import (
	"strings"
)

// This file and models_*.go model programs that run code or write files
// through their options and scripts: awk and sed here, tar, find and git
// in their own files. A model returns the
// hazards it found (code they run: at least ask) and records the files the
// program writes or reads (checked like redirections and like the read
// tool). Everything it found is named in the reason, so the approver sees
// what the command does.

// argInfo is what a command's model says about its arguments: which words
// are not paths to be checked (exempt, by index in cm.args), and the files
// it uses.
type argInfo struct {
	exempt []bool
	uses   []fileUse
	// chdir is the directory the command's relative paths resolve against,
	// when a model knows it differs (env -C DIR, tar -C DIR).
	noPaths bool // none of the words are paths (echo, printf)
}

// fileUse is a file a command reads or writes.
type fileUse struct {
	w     word
	src   string // as written, for the reason
	write bool
	what  string // what uses it: "sed -i", "tar -C (extracts into)", "the redirection"
}

func newArgInfo(n int) *argInfo {
	info := &argInfo{exempt: make([]bool, n)}
	if n > 0 {
		info.exempt[0] = true
	}
	return info
}

func (info *argInfo) exemptFrom(i int) {
	for ; i < len(info.exempt); i++ {
		info.exempt[i] = true
	}
}

// use records a file use of the word at cm.args[i].
func (info *argInfo) use(cm command, i int, write bool, what string) {
	if i <= 0 || i >= len(cm.args) {
		return
	}
	info.exempt[i] = true
	info.uses = append(info.uses, fileUse{w: cm.args[i], src: cm.argSrc[i], write: write, what: what})
}

// useValue records a file use of an option's value (attached or the next
// word). args are cm.args[1:], as the option parse saw them.
func (info *argInfo) useValue(cm command, o parsedOpt, write bool, what string) {
	if o.valueIdx >= 0 {
		info.use(cm, o.valueIdx+1, write, what)
		return
	}
	if o.hasValue {
		info.exempt[o.index+1] = true
		info.uses = append(info.uses, fileUse{w: literalWord(o.value), src: o.value, write: write, what: what})
	}
}

// useName records a file named in a script (not a word of the command).
func (info *argInfo) useName(f scriptFile, write bool) {
	w := literalWord(f.name)
	if !f.known {
		w = word{toks: []rune{wildcard}}
	}
	info.uses = append(info.uses, fileUse{w: w, src: f.name, write: write, what: f.what})
}

// isStdinFile reports whether a file name is standard input (a program
// read from there is code given on the command line).
func isStdinFile(s string) bool {
	return s == "-" || stdinPaths[s] || strings.HasPrefix(s, "/dev/fd/") || strings.HasPrefix(s, "/proc/self/fd/")
}

// stdinProgram is the hazard of a program file that is standard input.
func stdinProgram(prog string, o parsedOpt, w string) []hazard {
	if !o.valueLit || !isStdinFile(o.value) {
		return nil
	}
	return []hazard{{"hazard: code on stdin", prog + " " + o.written + " " + o.value + " reads the program to run from standard input", []string{w}, false}}
}

// scriptHazards turns a script's effects into hazards and file uses.
func scriptHazards(prog, trigger string, eff scriptEffect, info *argInfo) []hazard {
	var hz []hazard
	if eff.unreadable != "" {
		hz = append(hz, hazard{"hazard: unreadable script", prog + ": " + eff.unreadable + ", so the policy cannot tell whether it runs commands or writes files", []string{trigger}, false})
	}
	for _, c := range eff.code {
		hz = append(hz, hazard{"hazard: " + prog + " runs code", prog + ": " + c, []string{trigger}, false})
	}
	for _, f := range eff.writes {
		info.useName(f, true)
	}
	for _, f := range eff.reads {
		info.useName(f, false)
	}
	return hz
}

// unknownOptionHazards reports options a model does not know.
func unknownOptionHazards(prog string, ps optParse) []hazard {
	var hz []hazard
	for _, u := range ps.unknown {
		hz = append(hz, hazard{"hazard: unknown option", prog + " " + u + " is an option the policy does not know, so it cannot tell what the command does", nil, false})
	}
	return hz
}

// --- awk

var awkSpec = compileSpec(optSpec{defs: withStandard(
	value('F', "field-separator"), value('v', "assign"), value('f', "file").as(roleRead),
	value('e', "source").as(roleInterpCode), value('E', "exec").as(roleModuleStop),
	value('i', "include").as(roleRead), value('l', "load").as(roleLoader),
	optional('o', "pretty-print").as(roleWrite), optional('p', "profile").as(roleWrite),
	optional('d', "dump-variables").as(roleWrite), optional('D', "debug").as(roleInteractive),
	optional('L', "lint"), value('W'), flag('S', "sandbox").as(roleNoCommand),
	flag('b', "characters-as-bytes"), flag('c', "traditional"), flag('C', "copyright"),
	flag('g', "gen-pot"), flag('h'), flag('M', "bignum"), flag('N', "use-lc-numeric"),
	flag('n', "non-decimal-data"), flag('O', "optimize"), flag('P', "posix"), flag('r', "re-interval"),
	flag('s', "no-optimize"), flag('t', "lint-old"), flag('V'), flag('Z'),
)})

func (a *analysis) awkModel(cm command, prog string, info *argInfo) []hazard {
	args := cm.args[1:]
	ps := awkSpec.parse(args)
	hz := unknownOptionHazards(prog, ps)
	sandbox := ps.has(roleNoCommand)
	progGiven := false
	var scripts []struct {
		text string
		lit  bool
		idx  int
	}
	for _, o := range ps.opts {
		w, _ := cm.args[o.index+1].text()
		switch o.def.role {
		case roleRead:
			progGiven = progGiven || o.def.short == 'f'
			hz = append(hz, stdinProgram(prog, o, w)...)
			info.useValue(cm, o, false, prog+" "+o.written)
		case roleWrite:
			if o.hasValue {
				info.useValue(cm, o, true, prog+" "+o.written)
			} else {
				def := map[byte]string{'o': "awkprof.out", 'p': "awkprof.out", 'd': "awkvars.out"}[o.def.short]
				if def == "" {
					def = "awkprof.out"
				}
				info.uses = append(info.uses, fileUse{w: literalWord(def), src: def, write: true, what: prog + " " + o.written})
			}
		case roleModuleStop:
			progGiven = true
			hz = append(hz, stdinProgram(prog, o, w)...)
			info.useValue(cm, o, false, prog+" "+o.written)
		case roleLoader:
			hz = append(hz, hazard{"hazard: " + prog + " runs code", prog + " " + o.written + " loads a shared library", []string{w}, false})
		case roleInteractive:
			hz = append(hz, hazard{"hazard: " + prog + " runs code", prog + " " + o.written + " starts the debugger, which reads commands", []string{w}, false})
		case roleInterpCode:
			progGiven = true
			info.exempt[o.index+1] = true
			if o.valueIdx >= 0 {
				info.exempt[o.valueIdx+1] = true
			}
			scripts = append(scripts, struct {
				text string
				lit  bool
				idx  int
			}{o.value, o.valueLit, o.index})
		}
		if o.def.short == 'W' && o.hasValue && strings.HasPrefix(o.value, "e") { // mawk -W exec FILE
			progGiven = true
		}
		if o.def.short == 'v' || o.def.short == 'F' || o.def.short == 'W' {
			info.exempt[o.index+1] = true
			if o.valueIdx >= 0 {
				info.exempt[o.valueIdx+1] = true
			}
		}
	}
	if !progGiven && ps.operand < len(args) {
		s, lit := args[ps.operand].text()
		info.exempt[ps.operand+1] = true
		scripts = append(scripts, struct {
			text string
			lit  bool
			idx  int
		}{s, lit, ps.operand})
	}
	for _, sc := range scripts {
		trigger, _ := cm.args[sc.idx+1].text()
		if !sc.lit {
			hz = append(hz, hazard{"hazard: code string", prog + " runs a program known only at run time", nil, false})
			continue
		}
		eff := awkEffects(sc.text)
		if sandbox { // --sandbox refuses system(), pipes and redirections
			eff.code, eff.writes = nil, nil
		}
		hz = append(hz, scriptHazards(prog, trigger, eff, info)...)
	}
	return hz
}

// --- sed

var sedSpec = compileSpec(optSpec{permute: true, defs: withStandard(
	flag('n', "quiet", "silent"), flag(0, "debug"), value('e', "expression").as(roleInterpCode),
	value('f', "file").as(roleRead), flag(0, "follow-symlinks"), optional('i', "in-place").as(roleWrite),
	value('l', "line-length"), flag(0, "posix"), flag('E', "regexp-extended"), flag('r'),
	flag('s', "separate"), flag(0, "sandbox").as(roleNoCommand), flag('u', "unbuffered"),
	flag('z', "null-data"), flag('b', "binary"), flag('h'),
)})

func (a *analysis) sedModel(cm command, info *argInfo) []hazard {
	args := cm.args[1:]
	ps := sedSpec.parse(args)
	hz := unknownOptionHazards("sed", ps)
	sandbox, inPlace, scriptGiven := ps.has(roleNoCommand), false, false
	type script struct {
		text    string
		lit     bool
		trigger string
	}
	var scripts []script
	for _, o := range ps.opts {
		w, _ := cm.args[o.index+1].text()
		switch o.def.role {
		case roleInterpCode:
			scriptGiven = true
			info.exempt[o.index+1] = true
			if o.valueIdx >= 0 {
				info.exempt[o.valueIdx+1] = true
			}
			trigger := w
			if o.valueIdx >= 0 {
				trigger, _ = cm.args[o.valueIdx+1].text()
			}
			scripts = append(scripts, script{o.value, o.valueLit, trigger})
		case roleRead:
			scriptGiven = true
			hz = append(hz, stdinProgram("sed", o, w)...)
			info.useValue(cm, o, false, "sed "+o.written)
		case roleWrite:
			inPlace = true
			info.exempt[o.index+1] = true
		}
		if o.def.short == 'l' && o.valueIdx >= 0 {
			info.exempt[o.valueIdx+1] = true
		}
	}
	files := ps.operands
	if !scriptGiven && len(files) > 0 {
		k := files[0]
		files = files[1:]
		s, lit := args[k].text()
		info.exempt[k+1] = true
		scripts = append(scripts, script{s, lit, s})
	}
	for _, sc := range scripts {
		if !sc.lit {
			hz = append(hz, hazard{"hazard: code string", "sed runs a script known only at run time", nil, false})
			continue
		}
		eff := sedEffects(sc.text)
		if sandbox { // --sandbox refuses e, w and r
			eff.code, eff.writes, eff.reads = nil, nil, nil
		}
		hz = append(hz, scriptHazards("sed", sc.trigger, eff, info)...)
	}
	if inPlace {
		for _, k := range files {
			info.use(cm, k+1, true, "sed -i (edits in place)")
		}
	}
	return hz
}

// --- tar

func quoteValue(o *parsedOpt) string {
	if !o.valueLit {
		return "named at run time"
	}
	return "`" + o.value + "`"
}

// --- find
