package policy

import (
	"strings"
)

// This file models programs that run code or write files through their
// options and scripts: awk, sed, tar, find and git. A model returns the
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

// tarModes are tar's operation modes (-c -x ...); write says whether the
// archive (-f) is written.
var tarModes = map[string]struct{ write, extract bool }{
	"A": {true, false}, "catenate": {true, false}, "concatenate": {true, false},
	"c": {true, false}, "create": {true, false}, "d": {}, "diff": {}, "compare": {},
	"delete": {true, false}, "r": {true, false}, "append": {true, false}, "t": {}, "list": {},
	"test-label": {}, "u": {true, false}, "update": {true, false},
	"x": {false, true}, "extract": {false, true}, "get": {false, true},
}

var tarSpec = compileSpec(optSpec{permute: true, defs: func() []optDef {
	d := []optDef{
		flag('A', "catenate", "concatenate"), flag('c', "create"), flag('d', "diff", "compare"),
		flag(0, "delete"), flag('r', "append"), flag('t', "list"), flag(0, "test-label"),
		flag('u', "update"), flag('x', "extract", "get"),
		value('f', "file"), value('C', "directory"), value('I', "use-compress-program").as(roleInterpCode),
		value('F', "info-script", "new-volume-script").as(roleInterpCode),
		value(0, "to-command", "rsh-command", "rmt-command").as(roleInterpCode),
		value(0, "checkpoint-action").as(roleShellCode),
		value('g', "listed-incremental").as(roleWrite), value(0, "index-file", "volno-file").as(roleWrite),
		value('T', "files-from").as(roleRead), value('X', "exclude-from").as(roleRead),
		flag('P', "absolute-names").as(roleNoCommand),
		value('b', "blocking-factor"), value('H', "format"), value('K', "starting-file"),
		value('L', "tape-length"), value('N', "newer", "after-date"), value('V', "label"),
		optional(0, "atime-preserve", "backup", "checkpoint", "occurrence", "one-top-level", "totals"),
		flag('h', "dereference"), flag('?'),
	}
	for _, v := range strings.Fields(`add-file exclude exclude-ignore exclude-ignore-recursive exclude-tag
		exclude-tag-all exclude-tag-under group group-map hole-detection level mode mtime newer-mtime
		no-quote-chars owner owner-map pax-option quote-chars quoting-style record-size sort
		sparse-version strip-components suffix transform xform warning xattrs-exclude xattrs-include`) {
		d = append(d, value(0, v))
	}
	for _, f := range strings.Fields(`a:auto-compress B:read-full-records G:incremental i:ignore-zeros
		j:bzip2 J:xz k:keep-old-files l:check-links m:touch M:multi-volume n:seek O:to-stdout
		o:old-archive p:preserve-permissions R:block-number s:preserve-order S:sparse U:unlink-first
		v:verbose w:interactive W:verify z:gzip Z:compress :acls :anchored :block-number
		:check-device :clamp-mtime :delay-directory-restore :exclude-backups :exclude-caches
		:exclude-caches-all :exclude-caches-under :exclude-vcs :exclude-vcs-ignores :force-local
		:full-time :gunzip :ungzip :uncompress :hard-dereference :ignore-case :ignore-command-error
		:ignore-failed-read :keep-directory-symlink :keep-newer-files :lzip :lzma :lzop :no-acls
		:no-anchored :no-auto-compress :no-check-device :no-delay-directory-restore :no-ignore-case
		:no-ignore-command-error :no-null :no-overwrite-dir :no-recursion :no-same-owner
		:no-same-permissions :no-seek :no-selinux :no-unquote :no-verbatim-files-from :no-wildcards
		:no-wildcards-match-slash :no-xattrs :null :numeric-owner :old-arch :one-file-system
		:overwrite :overwrite-dir :portability :posix :preserve :recursion :recursive-unlink
		:remove-files :restrict :same-order :same-owner :same-permissions :confirmation
		:show-defaults :show-omitted-dirs :show-snapshot-field-ranges :show-stored-names
		:show-transformed-names :skip-old-files :sparse :unquote :usage :utc :verbatim-files-from
		:wildcards :wildcards-match-slash :xattrs :zstd :selinux :dereference :help :version`) {
		s, l, _ := strings.Cut(f, ":")
		var short byte
		if s != "" {
			short = s[0]
		}
		d = append(d, flag(short, l))
	}
	return d
}()})

func (a *analysis) tarModel(cm command, info *argInfo) []hazard {
	args := cm.args[1:]
	origLen, oldStyle := len(cm.args), false
	// Old style: the first word holds letters without a dash (tar xzf a.tgz);
	// each letter that takes a value takes the next word in turn.
	if len(args) > 0 {
		if s, ok := args[0].text(); ok && s != "" && !strings.HasPrefix(s, "-") && strings.Trim(s, "AcdrtuxfCIFgTXPbHKLNVaBGijJklmMnOopRsSUvwWzZh") == "" {
			rewritten := []word{literalWord("-" + s[:1])}
			rest := args[1:]
			for _, c := range s[1:] {
				rewritten = append(rewritten, literalWord("-"+string(c)))
				if d := tarSpec.short[byte(c)]; d != nil && d.kind == optValue && len(rest) > 0 {
					rewritten = append(rewritten, rest[0])
					rest = rest[1:]
				}
			}
			srcs := make([]string, len(rewritten))
			for i, w := range rewritten {
				srcs[i] = string(w.toks)
			}
			consumed := len(args) - len(rest)
			cm.args = append(append([]word{cm.args[0]}, rewritten...), rest...)
			cm.argSrc = append(append([]string{cm.argSrc[0]}, srcs...), cm.argSrc[1+consumed:]...)
			args = cm.args[1:]
			// the rewritten words are not those of the command: record
			// uses against the new shape, and check its operands here
			*info = *newArgInfo(len(cm.args))
			oldStyle = true
		}
	}
	ps := tarSpec.parse(args)
	hz := unknownOptionHazards("tar", ps)
	writeArchive, extract, absolute := false, false, false
	var archive, dir *parsedOpt
	for k := range ps.opts {
		o := &ps.opts[k]
		name := strings.TrimLeft(o.written, "-")
		if m, ok := tarModes[name]; ok {
			writeArchive = writeArchive || m.write
			extract = extract || m.extract
		}
		if o.def.short != 0 {
			if m, ok := tarModes[string(o.def.short)]; ok {
				writeArchive = writeArchive || m.write
				extract = extract || m.extract
			}
		}
		w, _ := cm.args[o.index+1].text()
		switch {
		case o.def.role == roleInterpCode:
			info.exempt[o.index+1] = true
			if o.valueIdx >= 0 {
				info.exempt[o.valueIdx+1] = true
			}
			hz = append(hz, hazard{"hazard: tar runs code", "tar " + o.written + " runs the program " + quoteValue(o) + "", []string{w}, false})
		case o.def.role == roleShellCode: // --checkpoint-action=exec=CMD
			if !o.valueLit || strings.Contains(o.value, "exec") {
				hz = append(hz, hazard{"hazard: tar runs code", "tar " + o.written + "=" + o.value + " runs a command at each checkpoint", []string{w}, false})
			}
		case o.def.role == roleWrite:
			info.useValue(cm, *o, true, "tar "+o.written)
		case o.def.role == roleRead:
			info.useValue(cm, *o, false, "tar "+o.written)
		case o.def.role == roleNoCommand:
			absolute = true
		case o.def.short == 'f':
			archive = o
		case o.def.short == 'C':
			dir = o
		}
	}
	if archive != nil {
		if s := archive.value; archive.valueLit && s != "-" {
			if c := strings.IndexByte(s, ':'); c > 0 && !strings.Contains(s[:c], "/") {
				hz = append(hz, hazard{"hazard: tar runs code", "tar -f " + s + " names a remote archive, which tar reaches by running rsh", nil, false})
			}
		}
		if !(archive.valueLit && archive.value == "-") {
			info.useValue(cm, *archive, writeArchive, "tar -f (the archive)")
		}
	}
	if extract {
		if dir != nil {
			info.useValue(cm, *dir, true, "tar -x (extracts into this directory)")
		} else {
			info.uses = append(info.uses, fileUse{w: literalWord("."), src: ".", write: true, what: "tar -x (extracts into the current directory)"})
		}
		if absolute {
			hz = append(hz, hazard{"hazard: tar writes anywhere", "tar -x with -P (--absolute-names) writes to the absolute paths the archive holds", nil, false})
		}
	} else if dir != nil {
		info.useValue(cm, *dir, false, "tar -C")
	}
	if oldStyle {
		for _, k := range ps.operands {
			info.use(cm, k+1, false, "tar (member)")
		}
		uses := info.uses
		*info = *newArgInfo(origLen)
		info.exemptFrom(1)
		info.uses = uses
	}
	return hz
}

func quoteValue(o *parsedOpt) string {
	if !o.valueLit {
		return "named at run time"
	}
	return "`" + o.value + "`"
}

// --- find

// findFileActions write the file named by their argument.
var findFileActions = setOf("-fprint", "-fprint0", "-fprintf", "-fls")

// findArgs are find's expression words that take arguments (how many),
// so that an argument is never read as an action.
var findArgs = map[string]int{
	"-name": 1, "-iname": 1, "-path": 1, "-ipath": 1, "-wholename": 1, "-iwholename": 1, "-regex": 1,
	"-iregex": 1, "-lname": 1, "-ilname": 1, "-regextype": 1, "-type": 1, "-xtype": 1, "-perm": 1,
	"-user": 1, "-group": 1, "-uid": 1, "-gid": 1, "-size": 1, "-mtime": 1, "-atime": 1, "-ctime": 1,
	"-mmin": 1, "-amin": 1, "-cmin": 1, "-maxdepth": 1, "-mindepth": 1, "-links": 1, "-inum": 1,
	"-newer": 1, "-anewer": 1, "-cnewer": 1, "-samefile": 1, "-used": 1, "-fstype": 1, "-context": 1,
	"-printf": 1, "-fprint": 1, "-fprint0": 1, "-fls": 1, "-fprintf": 2, "-files0-from": 1,
}

func (a *analysis) findModel(cm command, depth int, inner *outcome, info *argInfo) []hazard {
	var hz []hazard
	args := cm.args[1:]
	argv := make([]string, len(args))
	for i, w := range args {
		argv[i], _ = w.text()
	}
	i := 0
	// leading options -H -L -P -D debugopts -Olevel
	for i < len(args) {
		s := argv[i]
		if s == "-H" || s == "-L" || s == "-P" || strings.HasPrefix(s, "-O") {
			i++
			continue
		}
		if s == "-D" {
			i += 2
			continue
		}
		break
	}
	var starts []int
	for ; i < len(args); i++ {
		s := argv[i]
		if args[i].literal && (strings.HasPrefix(s, "-") || s == "(" || s == "!" || s == ",") {
			break
		}
		starts = append(starts, i)
	}
	for ; i < len(args); i++ {
		s := argv[i]
		info.exempt[i+1] = true
		switch {
		case findExecActions[s]:
			to := i + 1
			for to < len(argv) && argv[to] != ";" && argv[to] != "+" {
				to++
			}
			if i+1 < to {
				sub := a.subcommand(cm, i+2, to+1)
				for k, w := range sub.args {
					if t, ok := w.text(); ok && strings.Contains(t, "{}") {
						sub.args[k] = word{toks: collapseWild([]rune(strings.ReplaceAll(t, "{}", "\x00")))}
					}
				}
				inner.add(a.evaluate(sub, depth))
			}
			for k := i; k <= to && k < len(args); k++ {
				info.exempt[k+1] = true
			}
			i = to
		case s == "-delete":
			if len(starts) == 0 {
				info.uses = append(info.uses, fileUse{w: literalWord("."), src: ".", write: true, what: "find -delete (deletes below this directory)"})
			}
			for _, k := range starts {
				info.use(cm, k+1, true, "find -delete (deletes below this directory)")
			}
		case findFileActions[s]:
			if i+1 < len(args) {
				info.use(cm, i+2, true, "find "+s)
			}
			i += findArgs[s]
		case s == "-newer" || s == "-anewer" || s == "-cnewer" || s == "-samefile" || s == "-files0-from" || (strings.HasPrefix(s, "-newer") && len(s) == 8):
			if i+1 < len(args) {
				info.use(cm, i+2, false, "find "+s)
			}
			i++
		default:
			i += findArgs[s]
		}
	}
	return hz
}

// --- git

// gitGlobalSpec: git's options before the subcommand.
var gitGlobalSpec = compileSpec(optSpec{defs: []optDef{
	value('C'), value('c').as(roleInterpCode), value(0, "config-env").as(roleInterpCode),
	optional(0, "exec-path").as(roleLoader), value(0, "git-dir"), value(0, "work-tree"), value(0, "namespace"),
	value(0, "super-prefix"), optional(0, "list-cmds"), value(0, "attr-source"),
	flag('p', "paginate"), flag('P', "no-pager"), flag(0, "bare"), flag(0, "no-replace-objects"),
	flag(0, "literal-pathspecs"), flag(0, "glob-pathspecs"), flag(0, "noglob-pathspecs"),
	flag(0, "icase-pathspecs"), flag(0, "no-optional-locks"), flag(0, "no-advice"), flag(0, "html-path"),
	flag(0, "man-path"), flag(0, "info-path"), flag('v', "version"), flag('h', "help"),
}})

// gitCodeLongs are git subcommand options that run a program (matched by
// any unambiguous prefix, as git's option parser accepts abbreviations).
var gitCodeLongs = []string{"upload-pack", "receive-pack", "exec", "extcmd", "ext-diff",
	"open-files-in-pager", "to-cmd", "cc-cmd", "header-cmd", "sendmail-cmd", "smtp-server",
	"template", "config", "strategy-option"}

// gitWriteLongs are git subcommand options whose value is a file it writes.
var gitWriteLongs = []string{"output", "output-directory"}

func (a *analysis) gitModel(cm command, info *argInfo) []hazard {
	args := cm.args[1:]
	ps := gitGlobalSpec.parse(args)
	hz := unknownOptionHazards("git", ps)
	for _, o := range ps.opts {
		w, _ := cm.args[o.index+1].text()
		switch o.def.role {
		case roleInterpCode:
			hz = append(hz, hazard{"hazard: git runs code", "git " + o.written + " " + quoteValue(&o) + " sets configuration, which can name programs git runs (core.pager, alias.*, core.fsmonitor, ...)", []string{w}, false})
		case roleLoader:
			hz = append(hz, hazard{"hazard: git runs code", "git " + o.written + " changes where git finds its programs", []string{w}, false})
		}
		if o.def.short == 'C' || o.def.long != nil && (o.def.long[0] == "git-dir" || o.def.long[0] == "work-tree") {
			info.useValue(cm, o, false, "git "+o.written)
		}
	}
	if ps.operand >= len(args) {
		return hz
	}
	sub, _ := args[ps.operand].text()
	info.exempt[ps.operand+1] = true
	rest := args[ps.operand+1:]
	restStr := make([]string, len(rest))
	for i, w := range rest {
		restStr[i], _ = w.text()
	}
	if t, ok := gitCodeTrigger(append([]string{sub}, restStr...)); ok {
		hz = append(hz, hazard{"hazard: git runs code", "git " + t + " makes git run a command given as configuration or an argument", []string{t}, false})
	}
	fetchLike := sub == "clone" || sub == "fetch" || sub == "pull" || sub == "ls-remote" || sub == "archive"
	for k, s := range restStr {
		idx := ps.operand + 2 + k // index in cm.args
		if !rest[k].literal {
			continue
		}
		if s == "--" {
			break
		}
		if strings.HasPrefix(s, "--") && len(s) > 2 {
			name, val, hasVal := strings.Cut(s[2:], "=")
			for _, l := range gitCodeLongs {
				if strings.HasPrefix(l, name) && !(l == "config" && sub != "clone") && !(l == "template" && sub != "clone" && sub != "init") && !(l == "strategy-option") {
					hz = append(hz, hazard{"hazard: git runs code", "git " + sub + " --" + l + " runs a program given as its value (or from configuration)", []string{s}, false})
					break
				}
			}
			for _, l := range gitWriteLongs {
				if strings.HasPrefix(l, name) && len(name) >= 2 {
					if hasVal {
						info.exempt[idx] = true
						info.uses = append(info.uses, fileUse{w: literalWord(val), src: val, write: true, what: "git " + sub + " --" + l})
					} else if idx+1 < len(cm.args) {
						info.use(cm, idx+1, true, "git "+sub+" --"+l)
					}
					break
				}
			}
			continue
		}
		if len(s) > 1 && s[0] == '-' && s[1] != '-' {
			switch {
			case sub == "grep" && strings.ContainsRune(s[1:], 'O'):
				hz = append(hz, hazard{"hazard: git runs code", "git grep -O opens the matching files with a program (the pager, or the one given)", []string{s}, false})
			case fetchLike && s == "-u":
				hz = append(hz, hazard{"hazard: git runs code", "git " + sub + " -u runs the given program as upload-pack", []string{s}, false})
			case sub == "clone" && s == "-c":
				hz = append(hz, hazard{"hazard: git runs code", "git clone -c sets configuration, which can name programs git runs", []string{s}, false})
			case (sub == "format-patch" || sub == "archive") && s == "-o":
				if idx+1 < len(cm.args) {
					info.use(cm, idx+1, true, "git "+sub+" -o")
				}
			case (sub == "format-patch" || sub == "archive") && strings.HasPrefix(s, "-o"):
				info.exempt[idx] = true
				info.uses = append(info.uses, fileUse{w: literalWord(s[2:]), src: s[2:], write: true, what: "git " + sub + " -o"})
			}
		}
	}
	if sub == "bundle" && len(restStr) >= 2 && restStr[0] == "create" {
		info.use(cm, ps.operand+3, true, "git bundle create")
	}
	return hz
}
