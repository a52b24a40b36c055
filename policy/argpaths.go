package policy

import (
	"path/filepath"
	"strings"
)

// This file checks the files a command touches: its path-like arguments
// (read like the read tool), the files its model found (sed -i, tar -x,
// git --output, find -delete, ...), and its redirections (written like the
// write tool).
//
// What is a path. Every argument that is not an option (a word starting
// with `-`, before any `--`) is resolved as a path against the directory
// the command runs in, as are the values of long options written
// `--name=value`. A literal word resolves to exactly one place, so it asks
// only when that place is outside the workspace: an absolute path
// elsewhere, a `..` that climbs out, a symlink leading out (when symlinks
// are inspected), or a relative word after a cd left the workspace. Words
// with parts known only at run time are paths when their known parts say
// so: a leading `~`, a leading `/` (the directory before the first unknown
// part is checked), a `/` after an unknown start ("$HOME/x"), or a glob
// component that can match `..` (`.*`). A word that is only an expansion
// ("$f") is not seen as a path. Options with attached values (-o/x) are not
// read as paths. Programs that never open their arguments (echo, printf,
// test, ...) are not checked, nor are the code and pattern operands of the
// modelled programs (awk and sed scripts, node -e code).

// hasPathRules reports whether paths.ask or paths.deny can match anywhere.
func (p *Policy) hasPathRules() bool { return len(p.paths.deny)+len(p.paths.ask) > 0 }

// fileReasons judges the files one simple command reads and writes.
func (a *analysis) fileReasons(cm command, base string, info *argInfo) []Reason {
	var rs []Reason
	seg := cm.display
	if (base == "cd" || base == "pushd" || base == "popd") && a.readConfined && !cdTargetKnown(cm) {
		rs = append(rs, Reason{Segment: seg, Rule: "path_restriction", Why: base + " without a directory (or with -) goes to the home directory, the previous directory or the directory stack, which the policy cannot show to be inside the workspace", Decision: DecisionAsk})
	}
	if !info.noPaths && !cm.raw {
		afterDashes := false
		for i := 1; i < len(cm.args); i++ {
			w := cm.args[i]
			s, lit := w.text()
			if lit && s == "--" && !afterDashes {
				afterDashes = true
				continue
			}
			if info.exempt[i] {
				continue
			}
			if !afterDashes && len(w.toks) > 0 && w.toks[0] == '-' && (!lit || len(s) > 1) {
				// an option; a long one may carry a path as --name=value
				t := w.toks
				if len(t) > 2 && t[1] != '-' && (t[2] == '/' || t[2] == '~') {
					// -I/usr/include, -f/etc/x: an attached value that is an absolute path
					v := word{toks: t[2:], literal: w.literal, vars: w.vars, dotGlob: w.dotGlob, tilde: t[2] == '~'}
					rs = append(rs, a.readPath(seg, v, string(runesText(t[2:])), cm.cwd, cm.cwdKnown, "the option "+string(t[:2]))...)
					continue
				}
				if len(t) < 2 || t[1] != '-' {
					continue
				}
				k := indexRune(t, '=')
				if k < 0 {
					continue
				}
				v := word{toks: t[k+1:], literal: w.literal, tilde: false, vars: w.vars, dotGlob: w.dotGlob}
				rs = append(rs, a.readPath(seg, v, string(runesText(t[k+1:])), cm.cwd, cm.cwdKnown, "the option "+string(runesText(t[:k])))...)
				continue
			}
			if !lit && (base == "cd" || base == "pushd") && a.readConfined {
				rs = append(rs, Reason{Segment: seg, Rule: "path_restriction", Why: base + " changes to a directory named only at run time, which may be outside the workspace", Decision: DecisionAsk})
				continue
			}
			rs = append(rs, a.readPath(seg, w, cm.argSrc[i], cm.cwd, cm.cwdKnown, "the argument")...)
		}
	}
	for _, u := range info.uses {
		if u.write {
			rs = append(rs, a.writePath(seg, u.w, u.src, cm.cwd, cm.cwdKnown, u.what)...)
		} else {
			rs = append(rs, a.readPath(seg, u.w, u.src, cm.cwd, cm.cwdKnown, u.what)...)
		}
	}
	return rs
}

// cdTargetKnown reports whether a cd names its directory (a word that is
// not an option and not `-`); popd never does.
func cdTargetKnown(cm command) bool {
	prog, _ := cm.args[0].text()
	if baseName(prog) == "popd" {
		return false
	}
	for _, w := range cm.args[1:] {
		s, lit := w.text()
		if !lit {
			return true // named at run time: asked for by the argument check
		}
		if s == "-" {
			return false
		}
		if strings.HasPrefix(s, "-") && s != "--" {
			continue
		}
		if s == "--" {
			continue
		}
		return true
	}
	return false
}

// runesText renders runes with wildcards as `*`.
func runesText(t []rune) []rune {
	out := make([]rune, len(t))
	for i, r := range t {
		if r == wildcard {
			r = '*'
		}
		out[i] = r
	}
	return out
}

// readPath judges a path a command reads: path rules anywhere, and outside
// the workspace asks when reads are confined (as with the read tool).
func (a *analysis) readPath(seg string, w word, src, cwd string, cwdKnown bool, what string) []Reason {
	s, lit := w.text()
	outside := func(why string) []Reason {
		return []Reason{{Segment: seg, Rule: "path_restriction", Why: what + " " + src + " " + why, Decision: DecisionAsk}}
	}
	if lit {
		if s == "" || harmlessTargets[s] || isFdPath(s) || stdinPaths[s] || s == "/dev/zero" || s == "/dev/urandom" || s == "/dev/random" {
			return nil
		}
		if !a.readConfined && !a.p.hasPathRules() {
			return nil
		}
		if !filepath.IsAbs(s) && !cwdKnown {
			return nil // the cd that made the directory unknown asked already
		}
		v := a.judge(s, cwd, false)
		switch {
		case v.denied != nil:
			return []Reason{{Segment: seg, Rule: v.denied.rule, Why: what + " " + src + " is a path a deny rule names", Decision: DecisionDeny}}
		case v.asked != nil:
			return []Reason{{Segment: seg, Rule: v.asked.rule, Why: what + " " + src + " is a path an ask rule names", Decision: DecisionAsk}}
		case a.readConfined && !v.loc.inside && v.allowed == nil:
			return outside("names a path outside the workspace: " + v.loc.why)
		}
		return nil
	}
	if !a.readConfined {
		return nil
	}
	k := indexRune(w.toks, wildcard)
	if k < 0 {
		k = len(w.toks)
	}
	prefix := string(w.toks[:k])
	hasSlash := indexRune(w.toks, '/') >= 0
	switch {
	case w.tilde:
		return outside("starts with ~, a home directory the policy cannot show to be inside the workspace")
	case k == 0:
		if hasSlash {
			return outside("is a path whose start is known only at run time, so it may be anywhere")
		}
		if w.dotGlob {
			return outside("is a glob that can match .., the directory above")
		}
		return nil
	}
	if d := strings.LastIndexByte(prefix, '/'); d >= 0 && (filepath.IsAbs(prefix) || cwdKnown) {
		dir := prefix[:d+1]
		v := a.judge(dir, cwd, false)
		switch {
		case v.denied != nil:
			return []Reason{{Segment: seg, Rule: v.denied.rule, Why: what + " " + src + " is below a path a deny rule names", Decision: DecisionDeny}}
		case !v.loc.inside && v.allowed == nil:
			return outside("is read below " + dir + ", outside the workspace: " + v.loc.why)
		}
	}
	if w.dotGlob || (w.vars && hasSlash) {
		return outside("holds parts known only at run time that may climb out of the workspace with ..")
	}
	return nil
}

// writePath judges a file a command writes, like the write tool: path
// rules anywhere, outside the workspace asks (when writes are confined),
// and inside it the write setting (file_approval, capabilities.fileWrite)
// applies.
func (a *analysis) writePath(seg string, w word, src, cwd string, cwdKnown bool, what string) []Reason {
	var rs []Reason
	add := func(d Decision, rule, why string) {
		rs = append(rs, Reason{Segment: seg, Rule: rule, Why: why, Decision: d})
	}
	setting := func(target string) {
		if e := a.eff.write; e.decision != DecisionAllow {
			add(e.decision, e.rule, what+" writes "+target+"; writes follow this setting, as with the write tool")
		}
	}
	s, lit := w.text()
	switch {
	case !lit:
		if a.confined {
			add(DecisionAsk, "path_restriction", what+" writes to a file named only at run time")
		}
		setting(src)
	case harmlessTargets[s] || isFdPath(s):
	case !filepath.IsAbs(s) && !cwdKnown:
		if a.confined {
			add(DecisionAsk, "path_restriction", what+" writes relative to a directory an earlier cd made unknown")
		}
		setting(src)
	default:
		v := a.judge(s, cwd, true)
		switch {
		case v.denied != nil:
			add(DecisionDeny, v.denied.rule, what+" writes to "+src+", a path a deny rule names")
		case v.asked != nil:
			add(DecisionAsk, "path_restriction", what+" writes to "+src+", a path an ask rule names ("+v.asked.rule+")")
		case a.confined && !v.loc.inside && v.allowed == nil:
			add(DecisionAsk, "path_restriction", what+" writes outside the workspace: "+v.loc.why)
		default:
			setting(src)
		}
		if v.hardLink > 1 && v.allowed == nil {
			add(DecisionAsk, "hazard: hard link", what+" writes "+src+", which has more than one hard link; the other names may be outside the workspace")
		}
	}
	return rs
}
