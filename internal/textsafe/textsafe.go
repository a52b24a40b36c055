// Package textsafe shows untrusted text (what an agent chose: a command, a
// path, a form title, feedback) to a person without letting it act on the
// display. A terminal obeys ANSI escapes and other C0/C1 controls (clear
// the screen, move the cursor, rewrite a line), and every display obeys
// bidirectional controls (U+202E makes the rest of a line read backwards)
// and hides invisible format characters, so a command could hide part of
// itself from the person approving it. Escape makes every such character
// visible as an escape sequence instead.
//
// # The escaped form
//
// An unsafe rune (see Unsafe) is written \u{HEX}: ESC is \u{1b}, U+202E is
// \u{202e}. A byte that is not valid UTF-8 is written \x{HEX}: 0xff is
// \x{ff}. Everything else is written as it is, non-ASCII letters included.
//
// The form is unambiguous: a reader can always tell an escape from the
// same characters typed literally. Backslashes are written as they are,
// except a run of backslashes that comes right before "u{" or "x{" (typed
// literally, or starting an escape), which is written doubled. So to read
// the output back: before "u{" or "x{", a run of 2n backslashes is n
// literal backslashes followed by literal text, and a run of 2n+1 is n
// literal backslashes followed by an escape; every other backslash is
// literal. The input `\u{1b}` (six characters) is shown `\\u{1b}`, never
// as the escape of ESC. Backslashes elsewhere (`grep 'a\|b'`, `printf
// "\n"`) are shown unchanged, so the approver reads the command as written.
//
// Escape works on one line: newlines and tabs are escaped too, so a string
// cannot start a fake line of output. Show multi-line text by splitting it
// into lines and escaping each (EscapeLines).
package textsafe

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Unsafe reports whether r must not reach a display raw: the C0 controls
// (U+0000-U+001F, tab and newline included), DEL, the C1 controls
// (U+0080-U+009F), the line and paragraph separators U+2028 and U+2029, and
// every default-ignorable code point: the format characters (category Cf:
// the bidi controls U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069,
// zero-width characters, U+FEFF, soft hyphen, tag characters), variation
// selectors and the other invisible fillers (U+115F, U+3164, ...).
//
// Escaping the zero-width joiner and the variation selectors splits emoji
// sequences and some scripts' ligatures into visible parts; approval text
// needs to be exact more than pretty.
func Unsafe(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r < 0xa0:
		return false // printable ASCII: the common case, without table lookups
	case r == 0x2028, r == 0x2029:
		return true
	}
	return unicode.In(r, unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point)
}

// Escape returns s with every unsafe rune and every invalid UTF-8 byte made
// visible, as described in the package documentation. Text without them
// and without a backslash before "u{" or "x{" is returned unchanged.
func Escape(s string) string {
	if isPlain(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	pending := 0 // backslashes read but not yet written
	flush := func(double bool) {
		n := pending
		if double {
			n *= 2
		}
		for ; n > 0; n-- {
			b.WriteByte('\\')
		}
		pending = 0
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			flush(true)
			b.WriteString(`\x{`)
			b.WriteString(strconv.FormatUint(uint64(s[i]), 16))
			b.WriteByte('}')
		case r == '\\':
			pending++
		case Unsafe(r):
			flush(true)
			b.WriteString(`\u{`)
			b.WriteString(strconv.FormatUint(uint64(r), 16))
			b.WriteByte('}')
		case (r == 'u' || r == 'x') && i+1 < len(s) && s[i+1] == '{':
			flush(true)
			b.WriteRune(r)
		default:
			flush(false)
			b.WriteRune(r)
		}
		i += size
	}
	flush(false)
	return b.String()
}

// isPlain reports whether Escape would return s unchanged, cheaply: printable
// ASCII without a backslash needs no work at all.
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

// EscapeLines splits s at newlines and escapes each line; a trailing
// newline gives no empty last line. For multi-line text (a script, a
// description) shown on several lines of a display.
func EscapeLines(s string) []string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = Escape(l)
	}
	return lines
}

// EscapeJSON rewrites encoded JSON so that no unsafe rune appears raw: each
// is replaced by its JSON escape (\uXXXX, a surrogate pair above U+FFFF).
// The JSON decodes to the same value. encoding/json already escapes
// U+0000-U+001F, U+2028 and U+2029, but not DEL, the C1 controls or the
// bidi and other format characters; JSON output read on a terminal needs
// them escaped as much as text does. Invalid UTF-8 is left as it is
// (encoding/json never produces it).
func EscapeJSON(b []byte) []byte {
	clean := true
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r >= 0x7f && Unsafe(r) {
			clean = false
			break
		}
		i += size
	}
	if clean {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r < 0x7f || !Unsafe(r) {
			out = append(out, b[i:i+size]...)
			i += size
			continue
		}
		if r > 0xffff {
			r1, r2 := surrogates(r)
			out = appendU(appendU(out, r1), r2)
		} else {
			out = appendU(out, r)
		}
		i += size
	}
	return out
}

func surrogates(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}

func appendU(out []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	return append(out, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
}
