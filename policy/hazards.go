package policy

import (
	"regexp"
	"strings"
)

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
