package policy

import "strings"

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
