package textsafe

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"ascii", "ls -la /workspace && echo ok", "ls -la /workspace && echo ok"},
		{"non-ASCII letters", "héllo wörld 日本語 Привет مرحبا שלום ñ", "héllo wörld 日本語 Привет مرحبا שלום ñ"},
		{"emoji without joiners", "ship it 🚀", "ship it 🚀"},
		{"nbsp and symbols stay", "a\u00a0b © ½ → ✓", "a\u00a0b © ½ → ✓"},
		{"ANSI colour", "\x1b[31mred\x1b[0m", `\u{1b}[31mred\u{1b}[0m`},
		{"clear screen and home", "rm -rf ~\x1b[2J\x1b[H", `rm -rf ~\u{1b}[2J\u{1b}[H`},
		{"carriage return overwrite", "rm -rf /\rls", `rm -rf /\u{d}ls`},
		{"newline and tab", "a\nb\tc", `a\u{a}b\u{9}c`},
		{"NUL BEL BS DEL", "\x00\x07\x08\x7f", `\u{0}\u{7}\u{8}\u{7f}`},
		{"C1 CSI", "x\u009b31my", `x\u{9b}31my`},
		{"C1 NEL", "a\u0085b", `a\u{85}b`},
		{"RLO reverses", "echo safe \u202eexe.evil", `echo safe \u{202e}exe.evil`},
		{"every bidi embedding and override", "\u202a\u202b\u202c\u202d\u202e", `\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}`},
		{"bidi isolates", "\u2066\u2067\u2068\u2069", `\u{2066}\u{2067}\u{2068}\u{2069}`},
		{"bidi marks", "\u200e\u200f\u061c", `\u{200e}\u{200f}\u{61c}`},
		{"zero-width characters", "p\u200ba\u200cs\u200ds", `p\u{200b}a\u{200c}s\u{200d}s`},
		{"BOM and word joiner", "\ufeffx\u2060y", `\u{feff}x\u{2060}y`},
		{"soft hyphen", "pass\u00adword", `pass\u{ad}word`},
		{"line and paragraph separators", "a\u2028b\u2029c", `a\u{2028}b\u{2029}c`},
		{"tag characters", "ok\U000E0041\U000E007F", `ok\u{e0041}\u{e007f}`},
		{"hangul filler", "x\u3164y", `x\u{3164}y`},
		{"variation selector", "\u2764\ufe0f", "\u2764" + `\u{fe0f}`},
		{"invalid UTF-8", "a\xffb\xc3", `a\x{ff}b\x{c3}`},
		{"U+FFFD itself is printable", "\ufffd", "\ufffd"},
		{"backslashes elsewhere unchanged", `grep 'a\|b' && printf "\n" && echo \u00e9 \x41`, `grep 'a\|b' && printf "\n" && echo \u00e9 \x41`},
		{"literal escape look-alike doubled", `\u{1b}`, `\\u{1b}`},
		{"literal byte look-alike doubled", `\x{ff}`, `\\x{ff}`},
		{"two literal backslashes before u{", `\\u{1b}`, `\\\\u{1b}`},
		{"backslash before a control", "\\\x1b", `\\\u{1b}`},
		{"u{ without backslash unchanged", "fn u{1b}", "fn u{1b}"},
		{"trailing backslash", `dir\`, `dir\`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Escape(tc.in)
			if got != tc.want {
				t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if back, ok := unescape(got); !ok || back != tc.in {
				t.Errorf("unescape(%q) = %q, %v; want %q", got, back, ok, tc.in)
			}
		})
	}
}

func TestEscapeLines(t *testing.T) {
	got := EscapeLines("cat <<EOF\nhi\x1b[2J\nEOF\n")
	want := []string{"cat <<EOF", `hi\u{1b}[2J`, "EOF"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("EscapeLines = %q, want %q", got, want)
	}
}

func TestEscapeJSON(t *testing.T) {
	v := map[string]string{"command": "echo \u202eevil\x7f\u0085 \U000E0041 \x1b[0m ok é"}
	raw, _ := json.Marshal(v)
	got := EscapeJSON(raw)
	for _, r := range string(got) {
		if Unsafe(r) {
			t.Fatalf("EscapeJSON output holds %U: %q", r, got)
		}
	}
	var back map[string]string
	if err := json.Unmarshal(got, &back); err != nil || back["command"] != v["command"] {
		t.Fatalf("EscapeJSON changed the value: %q -> %q (%v)", v["command"], back["command"], err)
	}
	if !strings.Contains(string(got), `\u202e`) || !strings.Contains(string(got), `\udb40\udc41`) {
		t.Errorf("EscapeJSON = %s, want \\u202e and a surrogate pair for U+E0041", got)
	}
	plain := []byte(`{"a":"é日本"}`)
	if got := EscapeJSON(plain); string(got) != string(plain) {
		t.Errorf("EscapeJSON changed clean JSON: %s", got)
	}
}

// FuzzEscape: the output never holds an unsafe rune or invalid UTF-8; it
// reads back to the input (so the escaping is unambiguous); and text with
// nothing to escape is unchanged.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "ls", "\x1b[2J", "\u202e", `\u{1b}`, `\\\u{1b}`, "\\\x1b", "a\xffb", "日本\u200d語", `x{u{\`, "\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Escape(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Escape(%q) = %q is not valid UTF-8", s, got)
		}
		for _, r := range got {
			if Unsafe(r) {
				t.Fatalf("Escape(%q) = %q holds %U", s, got, r)
			}
		}
		back, ok := unescape(got)
		if !ok || back != s {
			t.Fatalf("Escape(%q) = %q reads back as %q (ok %v)", s, got, back, ok)
		}
		if plain := utf8.ValidString(s) && !strings.ContainsRune(s, '\\') && !strings.ContainsFunc(s, Unsafe); plain && got != s {
			t.Fatalf("Escape changed plain text %q to %q", s, got)
		}
		if j := EscapeJSON([]byte(strconv.Quote(s))); !utf8.Valid(j) && utf8.ValidString(s) {
			t.Fatalf("EscapeJSON broke UTF-8: %q", j)
		}
	})
}

// unescape reads Escape's output back, following the rules of the package
// documentation; ok is false for text Escape cannot produce.
func unescape(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			i++
			continue
		}
		k := 0
		for i+k < len(s) && s[i+k] == '\\' {
			k++
		}
		i += k
		special := i+1 < len(s) && (s[i] == 'u' || s[i] == 'x') && s[i+1] == '{'
		if !special {
			b.WriteString(strings.Repeat(`\`, k))
			continue
		}
		b.WriteString(strings.Repeat(`\`, k/2))
		if k%2 == 0 {
			continue // literal "u{" or "x{" follows
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", false
		}
		n, err := strconv.ParseUint(s[i+2:i+end], 16, 32)
		if err != nil {
			return "", false
		}
		if s[i] == 'x' {
			if n > 0xff {
				return "", false
			}
			b.WriteByte(byte(n))
		} else {
			b.WriteRune(rune(n))
		}
		i += end + 1
	}
	return b.String(), true
}
