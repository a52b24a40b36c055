package policy

import "strings"

// This file parses the options of the programs the policy models (wrappers,
// interpreters, awk, sed, tar, find, git) the way getopt_long does: short
// options may be clustered (-iS'code' is -i then -S with the value "code"),
// a short option's value may be attached or the next word, a long option's
// value follows `=` or is the next word, and a long option may be
// abbreviated to any unambiguous prefix. The parse never guesses: an option
// it does not know, or an abbreviation that fits several options, is
// reported as unknown, and the caller asks.

// optKind says whether an option takes a value.
type optKind int

const (
	optFlag     optKind = iota // takes no value
	optValue                   // takes a value: attached (-xV, --x=V) or the next word
	optOptional                // takes a value only when attached (-xV, --x=V)
)

// optRole is what an option means to the policy; most options mean nothing.
type optRole int

const (
	roleNone      optRole = iota
	roleCode              // the value is shell code (env -S, flock -c)
	roleNoCommand         // with it, the operands are not a command (command -v, ionice -p)
	roleShell             // the command is run by a shell (sudo -s): its words are shell code
	roleStdin             // without a command it starts a shell that reads standard input (sudo -s, doas -s)
	roleWrite             // the value is a file the program writes (time -o, strace -o)
	roleRead              // the value is a file the program reads (xargs -a)
	roleChdir             // the value is the directory the command runs in (env -C)
	roleLoader            // the value changes where programs are found (env -P)
	roleEdit              // the operands are files opened in an editor (sudo -e)
)

// optDef is one option: its short letter (0 for none), its long names
// (without the leading dashes), what it takes and what it means.
type optDef struct {
	short byte
	long  []string
	kind  optKind
	role  optRole
}

// optSpec is the option syntax of one program.
type optSpec struct {
	defs []optDef
	// legacyNumeric: -N (digits) is an option (nice -10).
	legacyNumeric bool
	// permute: options may follow operands (GNU getopt without "+"); by
	// default the options end at the first operand, as they do for every
	// wrapper (their getopt strings start with "+").
	permute bool
	short   map[byte]*optDef
	long    map[string]*optDef
}

// compileSpec indexes the definitions.
func compileSpec(s optSpec) *optSpec {
	s.short = make(map[byte]*optDef)
	s.long = make(map[string]*optDef)
	for i := range s.defs {
		d := &s.defs[i]
		if d.short != 0 {
			s.short[d.short] = d
		}
		for _, l := range d.long {
			s.long[l] = d
		}
	}
	return &s
}

// parsedOpt is one option found in a command.
type parsedOpt struct {
	def      *optDef
	written  string // the option as written: "-S", "--split-string", "-0"
	index    int    // index (in the parsed words) of the word holding the option
	value    string // its value, when it has one
	hasValue bool
	valueLit bool // the value is fully known
	valueIdx int  // index of the word holding the value; -1 when attached
}

// optParse is the result of parsing a program's options.
type optParse struct {
	opts []parsedOpt
	// operand is the index of the first operand (len(words) when none); a
	// word whose value is only known at run time also ends the options.
	operand int
	// unknown lists options the spec does not know (as written), with the
	// index of their word.
	unknown    []string
	unknownIdx []int
	// operands, for a permuting spec: the indexes of every operand.
	operands []int
}

// has reports whether an option with the role was given.
func (p *optParse) has(role optRole) bool {
	for _, o := range p.opts {
		if o.def.role == role {
			return true
		}
	}
	return false
}

// lookupLong resolves a long option name or an unambiguous prefix of one.
// ok is false when the name fits no option or several different ones.
func (s *optSpec) lookupLong(name string) (*optDef, bool) {
	if d, ok := s.long[name]; ok {
		return d, true
	}
	if name == "" {
		return nil, false
	}
	var found *optDef
	for l, d := range s.long {
		if strings.HasPrefix(l, name) {
			if found != nil && found != d {
				return nil, false
			}
			found = d
		}
	}
	return found, found != nil
}

// parse reads the options at the start of words (the program's arguments).
func (s *optSpec) parse(words []word) optParse {
	var out optParse
	out.operand = len(words)
	unknown := func(w string, i int) {
		out.unknown = append(out.unknown, w)
		out.unknownIdx = append(out.unknownIdx, i)
	}
	for i := 0; i < len(words); i++ {
		str, lit := words[i].text()
		if !lit {
			if !s.permute {
				out.operand = i
				return out
			}
			out.operands = append(out.operands, i)
			continue
		}
		if str == "--" {
			if out.operand == len(words) {
				out.operand = i + 1
			}
			for k := i + 1; k < len(words); k++ {
				out.operands = append(out.operands, k)
			}
			return out
		}
		if len(str) < 2 || str[0] != '-' {
			if !s.permute {
				out.operand = i
				return out
			}
			if out.operand == len(words) {
				out.operand = i
			}
			out.operands = append(out.operands, i)
			continue
		}
		next := func() (string, bool, int) {
			if i+1 >= len(words) {
				return "", false, -1
			}
			i++
			v, ok := words[i].text()
			return v, ok, i
		}
		if strings.HasPrefix(str, "--") {
			name, val, hasVal := strings.Cut(str[2:], "=")
			d, ok := s.lookupLong(name)
			if !ok {
				unknown(str, i)
				continue
			}
			o := parsedOpt{def: d, written: "--" + name, index: i, valueIdx: -1}
			switch {
			case hasVal && d.kind == optFlag:
				unknown(str, i) // --flag=value: getopt refuses it
				continue
			case hasVal:
				o.value, o.hasValue, o.valueLit = val, true, true
			case d.kind == optValue:
				v, vlit, vi := next()
				o.value, o.hasValue, o.valueLit, o.valueIdx = v, vi >= 0, vlit, vi
			}
			out.opts = append(out.opts, o)
			continue
		}
		if s.legacyNumeric && strings.Trim(str[1:], "0123456789") == "" {
			out.opts = append(out.opts, parsedOpt{def: &optDef{}, written: str, index: i, valueIdx: -1})
			continue
		}
		// A cluster of short options: -abc, -Svalue, -ab value.
		for k := 1; k < len(str); k++ {
			d, ok := s.short[str[k]]
			if !ok {
				unknown("-"+string(str[k]), i)
				break
			}
			o := parsedOpt{def: d, written: "-" + string(str[k]), index: i, valueIdx: -1}
			if d.kind != optFlag {
				if rest := str[k+1:]; rest != "" {
					o.value, o.hasValue, o.valueLit = rest, true, true
				} else if d.kind == optValue {
					v, vlit, vi := next()
					o.value, o.hasValue, o.valueLit, o.valueIdx = v, vi >= 0, vlit, vi
				}
				out.opts = append(out.opts, o)
				break
			}
			out.opts = append(out.opts, o)
		}
	}
	return out
}

// flag, value and optional build option definitions tersely.
func flag(short byte, long ...string) optDef { return optDef{short: short, long: long, kind: optFlag} }
func value(short byte, long ...string) optDef {
	return optDef{short: short, long: long, kind: optValue}
}
func optional(short byte, long ...string) optDef {
	return optDef{short: short, long: long, kind: optOptional}
}

// as sets the role of an option definition.
func (d optDef) as(r optRole) optDef { d.role = r; return d }

// standardOpts are --help and --version, which every GNU program has.
var standardOpts = []optDef{flag(0, "help"), flag(0, "version")}

func withStandard(defs ...optDef) []optDef { return append(defs, standardOpts...) }
