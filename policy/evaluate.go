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
