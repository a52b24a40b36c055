package policy

import "strings"

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
