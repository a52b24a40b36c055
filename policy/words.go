package policy

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"mvdan.cc/sh/v3/syntax"
)

// word is one shell word as the policy sees it: its value after quote
// removal, with wildcard where the value is only known at run time.
type word struct {
	toks    []rune
	literal bool // no wildcard: the value is fully known
	// mayVanish: the word is only unquoted expansions ($x, $(cmd)), which
	// field splitting removes entirely when they are empty: `cat $f` can run
	// a bare `cat`.
	mayVanish bool
	procSubst bool // holds <(...) or >(...): a file whose content a command writes
	tilde     bool // starts with an unquoted ~ (a home directory)
	vars      bool // holds an expansion or substitution, whose value may hold / and ..
	dotGlob   bool // holds a glob component that can match .. (.*, [.]*, an extglob)
}

// text returns the known value of a literal word ("" with ok=false otherwise).
func (w word) text() (string, bool) {
	if !w.literal {
		return "", false
	}
	return string(w.toks), true
}

// renderWord computes the value of a word as far as it is known statically.
// Quotes and backslashes are removed as the shell removes them, $'...' is
// decoded (bash reads `$'\x72m'` as rm), and every expansion, substitution,
// unquoted glob or brace expansion becomes a wildcard.
func renderWord(w *syntax.Word) word {
	var b runeBuf
	if w == nil {
		return word{literal: true}
	}
	tilde := false
	for i, part := range w.Parts {
		if lit, ok := part.(*syntax.Lit); ok && i == 0 && strings.HasPrefix(lit.Value, "~") {
			// Tilde expansion: ~ and ~user become a home directory.
			tilde = true
			b.wild()
			rest := ""
			if k := strings.IndexByte(lit.Value, '/'); k >= 0 {
				rest = lit.Value[k:]
			}
			renderUnquotedLit(&b, rest)
			continue
		}
		renderPart(&b, part, false)
	}
	if hasBraceExpansion(w) {
		b.toks = []rune{wildcard}
		b.unknown = true
	}
	out := word{toks: b.toks, literal: !b.unknown, mayVanish: onlyExpansions(w), tilde: tilde, vars: b.vars, dotGlob: b.dotGlob}
	for _, p := range w.Parts {
		if _, ok := p.(*syntax.ProcSubst); ok {
			out.procSubst = true
		}
	}
	if hasBraceExpansion(w) {
		out.dotGlob = true // {..,x} makes words of its own
	}
	return out
}

// onlyExpansions reports whether every part of the word is an unquoted
// parameter expansion or command substitution.
func onlyExpansions(w *syntax.Word) bool {
	for _, p := range w.Parts {
		switch p.(type) {
		case *syntax.ParamExp, *syntax.CmdSubst:
		default:
			return false
		}
	}
	return len(w.Parts) > 0
}

type runeBuf struct {
	toks    []rune
	unknown bool
	vars    bool // an expansion or substitution was rendered
	dotGlob bool // a glob component that can match ..
}

// globMayClimb reports whether a glob character r placed now starts or
// continues a component that can match `..`: one whose text so far is
// empty (a bracket first: [.][.]) or starts with a dot (.*).
func (b *runeBuf) globMayClimb(r rune) bool {
	start := len(b.toks)
	for start > 0 && b.toks[start-1] != '/' {
		start--
	}
	comp := b.toks[start:]
	if len(comp) == 0 {
		return r == '['
	}
	return comp[0] == '.'
}

func (b *runeBuf) lit(r rune) { b.toks = append(b.toks, r) }
func (b *runeBuf) str(s string) {
	for _, r := range s {
		b.toks = append(b.toks, r)
	}
}
func (b *runeBuf) wild() {
	b.unknown = true
	if n := len(b.toks); n > 0 && b.toks[n-1] == wildcard {
		return
	}
	b.toks = append(b.toks, wildcard)
}

func renderPart(b *runeBuf, part syntax.WordPart, quoted bool) {
	switch p := part.(type) {
	case *syntax.Lit:
		if quoted {
			renderDoubleQuotedLit(b, p.Value)
		} else {
			renderUnquotedLit(b, p.Value)
		}
	case *syntax.SglQuoted:
		if !p.Dollar {
			b.str(p.Value)
			return
		}
		s, ok := decodeANSIC(p.Value)
		if !ok {
			b.wild()
			return
		}
		b.str(s)
	case *syntax.DblQuoted:
		for _, inner := range p.Parts {
			renderPart(b, inner, true)
		}
	case *syntax.ExtGlob:
		b.dotGlob = true
		b.wild()
	default: // ParamExp, CmdSubst, ArithmExp, ProcSubst, BraceExp
		b.vars = true
		b.wild()
	}
}

// renderUnquotedLit removes backslashes and turns glob characters into
// wildcards (a glob expands to file names nobody knows yet).
func renderUnquotedLit(b *runeBuf, s string) {
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch r {
		case '\\':
			if i+1 < len(rs) {
				i++
				if rs[i] != '\n' {
					b.lit(rs[i])
				}
			} else {
				b.lit(r)
			}
		case '*', '?':
			b.dotGlob = b.dotGlob || b.globMayClimb(r)
			b.wild()
		case '[':
			if j := indexRune(rs[i+1:], ']'); j >= 0 {
				b.dotGlob = b.dotGlob || b.globMayClimb(r)
				b.wild()
				i += j + 1
			} else {
				b.lit(r)
			}
		default:
			b.lit(r)
		}
	}
}

func indexRune(rs []rune, r rune) int {
	for i, x := range rs {
		if x == r {
			return i
		}
	}
	return -1
}

// renderDoubleQuotedLit removes the backslashes that escape $ ` " \ and
// newline inside double quotes; other backslashes stay.
func renderDoubleQuotedLit(b *runeBuf, s string) {
	b.str(unescape(s, doubleQuoteEscapable))
}

// doubleQuoteEscapable reports whether a backslash before r is removed
// inside double quotes.
func doubleQuoteEscapable(r rune) bool { return strings.ContainsRune("$`\"\\\n", r) }

// anyEscapable: outside quotes a backslash escapes every character.
func anyEscapable(rune) bool { return true }

// unescape removes the backslashes before the runes escapable says, and
// backslash-newline pairs.
func unescape(s string, escapable func(rune) bool) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	rs := []rune(s)
	var b strings.Builder
	for i := 0; i < len(rs); i++ {
		if rs[i] == '\\' && i+1 < len(rs) && escapable(rs[i+1]) {
			i++
			if rs[i] != '\n' {
				b.WriteRune(rs[i])
			}
			continue
		}
		b.WriteRune(rs[i])
	}
	return b.String()
}

// hasBraceExpansion reports whether an unquoted part of the word holds a
// bash brace expansion ({a,b} or {1..3}), which turns one word into several:
// `{rm,-rf,/}` runs rm. Detected on a copy so the tree stays untouched.
func hasBraceExpansion(w *syntax.Word) bool {
	candidate := false
	for _, p := range w.Parts {
		if l, ok := p.(*syntax.Lit); ok && strings.Contains(l.Value, "{") {
			candidate = true
			break
		}
	}
	if !candidate {
		return false
	}
	cp := &syntax.Word{Parts: append([]syntax.WordPart(nil), w.Parts...)}
	if !syntax.SplitBraces(cp) {
		return false
	}
	found := false
	syntax.Walk(cp, func(n syntax.Node) bool {
		if b, ok := n.(*syntax.BraceExp); ok && (b.Sequence || len(b.Elems) > 1) {
			found = true // {a,b} or {1..3}; a lone {} or {x} stays a word
		}
		return !found
	})
	return found
}

// decodeANSIC decodes the body of a bash $'...' string. ok is false for an
// escape it does not know, so the caller treats the word as unknown rather
// than guess. Like bash, the value ends at a NUL byte.
func decodeANSIC(s string) (string, bool) {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			out.WriteByte(c)
			continue
		}
		i++
		switch c = s[i]; c {
		case 'a':
			out.WriteByte('\a')
		case 'b':
			out.WriteByte('\b')
		case 'e', 'E':
			out.WriteByte(0x1b)
		case 'f':
			out.WriteByte('\f')
		case 'n':
			out.WriteByte('\n')
		case 'r':
			out.WriteByte('\r')
		case 't':
			out.WriteByte('\t')
		case 'v':
			out.WriteByte('\v')
		case '\\', '\'', '"', '?':
			out.WriteByte(c)
		case 'c':
			if i+1 >= len(s) {
				return "", false
			}
			i++
			out.WriteByte(s[i] & 0x1f)
		case 'x', 'u', 'U':
			max := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]
			j := i + 1
			for j < len(s) && j-i-1 < max && isHex(s[j]) {
				j++
			}
			if j == i+1 {
				return "", false
			}
			n, err := strconv.ParseUint(s[i+1:j], 16, 32)
			if err != nil {
				return "", false
			}
			if c == 'x' {
				out.WriteByte(byte(n))
			} else {
				if !utf8.ValidRune(rune(n)) {
					return "", false
				}
				out.WriteRune(rune(n))
			}
			i = j - 1
		case '0', '1', '2', '3', '4', '5', '6', '7':
			j := i
			for j < len(s) && j-i < 3 && s[j] >= '0' && s[j] <= '7' {
				j++
			}
			n, _ := strconv.ParseUint(s[i:j], 8, 16)
			out.WriteByte(byte(n))
			i = j - 1
		default:
			return "", false
		}
	}
	v := out.String()
	if k := strings.IndexByte(v, 0); k >= 0 {
		v = v[:k]
	}
	return v, true
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
