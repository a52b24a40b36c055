package policy

import (
	"path"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// Command patterns and the text they match are sequences of runes in which
// wildcard stands for "any string". In a pattern it is a `*`; in the text of a
// command it is a part whose value is only known when the command runs: a
// variable, a substitution, an unquoted glob, a brace expansion.
const wildcard rune = -1

// pattern is one compiled command pattern.
type pattern struct {
	source string // as written, normalized (trimmed, single spaces)
	rule   string // where it comes from, e.g. `commands.allow[0] "ls *"`
	// strict is the pattern used for allow rules and grants.
	strict []rune
	// loose is the pattern used for ask and deny rules: the program (first
	// word) is reduced to its base name in lower case, and a space right after a `*` is
	// optional, so `curl * internal.example.com*` also catches
	// `curl https://internal.example.com/`. Restrictive rules err towards
	// matching; permissive rules never do.
	loose []rune
	// fields are the words of the pattern that hold no `*`: a rule names a
	// risky flag explicitly (e.g. `node -e *`) only if it is one of them.
	fields []string
	words  []string // all words, for "NAME=" triggers (PATH=* names PATH)
	exact  bool     // no `*` at all
}

// normalizePattern trims a pattern and collapses runs of blanks into one
// space, the separator used when a command's words are joined.
func normalizePattern(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// canonicalPattern is how a rule or grant is stored: quotes and
// backslashes removed the way the shell removes them from a command, so
// `grep -r "TODO" *` and `grep -r TODO *` are one pattern and match the
// command as it is rendered. A pattern that is not one plain simple command
// (several commands, a comment, a substitution) is only normalized.
func canonicalPattern(s string) string {
	s = normalizePattern(s)
	if !strings.ContainsAny(s, `'"\`) {
		return s
	}
	parser := syntax.NewParser(syntax.Variant(syntax.LangBash), syntax.KeepComments(true))
	f, err := parser.Parse(strings.NewReader(s), "")
	if err != nil || len(f.Stmts) != 1 || len(f.Last) > 0 {
		return s
	}
	st := f.Stmts[0]
	call, ok := st.Cmd.(*syntax.CallExpr)
	if !ok || len(st.Redirs) > 0 || len(st.Comments) > 0 || st.Negated || st.Background || len(call.Assigns) > 0 {
		return s
	}
	words := make([]string, 0, len(call.Args))
	for _, w := range call.Args {
		var b strings.Builder
		for _, part := range w.Parts {
			switch p := part.(type) {
			case *syntax.Lit:
				b.WriteString(unescape(p.Value, anyEscapable))
			case *syntax.SglQuoted:
				v := p.Value
				if p.Dollar {
					if v, ok = decodeANSIC(v); !ok {
						return s
					}
				}
				b.WriteString(v)
			case *syntax.DblQuoted:
				for _, inner := range p.Parts {
					l, ok := inner.(*syntax.Lit)
					if !ok {
						return s
					}
					b.WriteString(unescape(l.Value, doubleQuoteEscapable))
				}
			default:
				return s
			}
		}
		words = append(words, b.String())
	}
	return normalizePattern(strings.Join(words, " "))
}

// compilePattern compiles a normalized, non-empty pattern.
func compilePattern(src, rule string) pattern {
	p := pattern{source: src, rule: rule, exact: !strings.Contains(src, "*")}
	p.strict = globRunes(src)
	p.loose = globRunes(loosen(src))
	p.words = strings.Split(src, " ")
	for _, f := range p.words {
		if !strings.Contains(f, "*") {
			p.fields = append(p.fields, f)
		}
	}
	return p
}

// loosen rewrites a pattern for restrictive matching (see pattern.loose).
func loosen(src string) string {
	first, rest, hasRest := strings.Cut(src, " ")
	if !strings.Contains(first, "*") && strings.Contains(first, "/") {
		first = path.Base(first)
	}
	first = strings.ToLower(first)
	if hasRest {
		src = first + " " + rest
	} else {
		src = first
	}
	return strings.ReplaceAll(src, "* ", "*")
}

// globRunes turns pattern text into runes with `*` as wildcard; runs of `*`
// collapse into one.
func globRunes(s string) []rune {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r == '*' {
			r = wildcard
			if len(out) > 0 && out[len(out)-1] == wildcard {
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// covers reports whether pattern p matches every command the text t can turn
// into: a wildcard in t must be swallowed by a `*` of p. This is the test
// for allow rules, so it only ever errs towards "no".
func covers(p, t []rune) bool {
	pi, ti := 0, 0
	star, mark := -1, 0
	for ti < len(t) {
		switch {
		case pi < len(p) && p[pi] == wildcard:
			star, mark = pi, ti
			pi++
		case pi < len(p) && p[pi] == t[ti]: // t[ti] is never wildcard here: p[pi] >= 0
			pi++
			ti++
		case star >= 0:
			pi = star + 1
			mark++
			ti = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == wildcard {
		pi++
	}
	return pi == len(p)
}

// overlaps reports whether pattern p matches at least one of the commands
// the text t can turn into (both sides may hold wildcards). This is the test
// for "could this hit a deny rule once the variables are known".
func overlaps(p, t []rune) bool {
	if !hasWildcard(t) {
		return covers(p, t)
	}
	// ok[j] holds the answer for (p[i:], t[j:]) while i runs downwards.
	lp, lt := len(p), len(t)
	next := make([]bool, lt+1) // row i+1
	cur := make([]bool, lt+1)  // row i
	for j := lt; j >= 0; j-- { // row lp: only wildcards of t may remain
		next[j] = j == lt || (t[j] == wildcard && next[j+1])
	}
	for i := lp - 1; i >= 0; i-- {
		for j := lt; j >= 0; j-- {
			switch {
			case p[i] == wildcard:
				cur[j] = next[j] || (j < lt && cur[j+1])
			case j < lt && t[j] == wildcard:
				cur[j] = cur[j+1] || next[j]
			default:
				cur[j] = j < lt && p[i] == t[j] && next[j+1]
			}
		}
		next, cur = cur, next
	}
	return next[0]
}

func hasWildcard(t []rune) bool {
	for _, r := range t {
		if r == wildcard {
			return true
		}
	}
	return false
}

// names reports whether the pattern names every trigger explicitly: each
// trigger is one of the pattern's `*`-free words, or for a trigger ending in
// "=" (an environment assignment) a prefix of one.
func (p *pattern) names(triggers []string) bool {
	for _, t := range triggers {
		found := false
		if strings.HasSuffix(t, "=") {
			for _, w := range p.words {
				found = found || strings.HasPrefix(w, t)
			}
		}
		for _, f := range p.fields {
			found = found || f == t
		}
		if !found {
			return false
		}
	}
	return true
}
