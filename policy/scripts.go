package policy

import (
	"strings"
	"unicode"
)

// This file reads the small languages of awk and sed far enough to find
// what in a program runs commands or touches files. Both readers err
// towards finding something: a construct they cannot follow is reported as
// unreadable, and the caller asks.

// scriptEffect is what a script does beyond filtering text.
type scriptEffect struct {
	code   []string // descriptions of what runs commands ("system()", "print | cmd")
	writes []scriptFile
	reads  []scriptFile
	// unreadable is set when the reader could not follow the script.
	unreadable string
}

// scriptFile is a file named in a script; known is false when its name is
// computed at run time.
type scriptFile struct {
	name  string
	known bool
	what  string
}

// awkEffects scans an awk program (POSIX awk, gawk, mawk, busybox).
//
// It finds: system(...), gawk's indirect calls (@f(...)), pipes (print | "cmd", "cmd" | getline, gawk's
// |&), output redirections of print/printf (> and >> at the statement's
// own bracket level), getline < file, and gawk's @load. String literals and
// regular expression literals (told from division by the token before them,
// as awk's lexer does) are skipped.
func awkEffects(src string) scriptEffect {
	var eff scriptEffect
	rs := []rune(src)
	type tok struct {
		kind byte // 'i' identifier, 's' string, 'r' regex, 'n' number, 'p' punctuation
		text string
	}
	var toks []tok
	operand := func() bool { // does the previous token end an operand (so `/` divides)?
		if len(toks) == 0 {
			return false
		}
		t := toks[len(toks)-1]
		switch t.kind {
		case 'i':
			return !awkKeywords[t.text] || t.text == "getline"
		case 's', 'r', 'n':
			return true
		}
		return t.text == ")" || t.text == "]" || t.text == "$" || t.text == "++" || t.text == "--"
	}
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case r == '\\' && i+1 < len(rs) && rs[i+1] == '\n':
			i += 2
		case r == '\n' || r == ';':
			toks = append(toks, tok{'p', ";"})
			i++
		case unicode.IsSpace(r):
			i++
		case r == '#':
			for i < len(rs) && rs[i] != '\n' {
				i++
			}
		case r == '"':
			j := i + 1
			var b strings.Builder
			for j < len(rs) && rs[j] != '"' {
				if rs[j] == '\\' && j+1 < len(rs) {
					j++
					switch rs[j] {
					case 'n':
						b.WriteRune('\n')
					case 't':
						b.WriteRune('\t')
					case '"', '\\', '/':
						b.WriteRune(rs[j])
					default:
						b.WriteRune('\\')
						b.WriteRune(rs[j])
					}
					j++
					continue
				}
				b.WriteRune(rs[j])
				j++
			}
			if j >= len(rs) {
				eff.unreadable = "an awk string is not closed"
				return eff
			}
			toks = append(toks, tok{'s', b.String()})
			i = j + 1
		case r == '/' && !operand():
			j := i + 1
			inBracket := false
			for j < len(rs) && (rs[j] != '/' || inBracket) {
				switch {
				case rs[j] == '\\' && j+1 < len(rs):
					j++
				case rs[j] == '[':
					inBracket = true
				case rs[j] == ']':
					inBracket = false
				case rs[j] == '\n':
					eff.unreadable = "an awk regular expression is not closed"
					return eff
				}
				j++
			}
			if j >= len(rs) {
				eff.unreadable = "an awk regular expression is not closed"
				return eff
			}
			toks = append(toks, tok{'r', string(rs[i+1 : j])})
			i = j + 1
		case r == '_' || unicode.IsLetter(r) || r == '@':
			j := i + 1
			for j < len(rs) && (rs[j] == '_' || unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j])) {
				j++
			}
			toks = append(toks, tok{'i', string(rs[i:j])})
			i = j
		case unicode.IsDigit(r) || (r == '.' && i+1 < len(rs) && unicode.IsDigit(rs[i+1])):
			j := i + 1
			for j < len(rs) && (unicode.IsDigit(rs[j]) || rs[j] == '.' || rs[j] == 'e' || rs[j] == 'E' || rs[j] == 'x' || unicode.Is(unicode.ASCII_Hex_Digit, rs[j])) {
				j++
			}
			toks = append(toks, tok{'n', string(rs[i:j])})
			i = j
		default:
			two := ""
			if i+1 < len(rs) {
				two = string(rs[i : i+2])
			}
			switch two {
			case ">>", "|&", "||", "&&", "==", "!=", "<=", ">=", "++", "--", "+=", "-=", "*=", "/=", "%=", "^=", "**":
				toks = append(toks, tok{'p', two})
				i += 2
			default:
				toks = append(toks, tok{'p', string(r)})
				i++
			}
		}
	}
	// Walk the tokens: statement starts, print/printf output, getline input.
	inPrint, printDepth, depth := false, 0, 0
	target := func(k int, what string, write bool) {
		f := scriptFile{what: what}
		if k < len(toks) && toks[k].kind == 's' && (k+1 >= len(toks) || toks[k+1].text == ";" || toks[k+1].text == "}" || toks[k+1].text == ")") {
			f.name, f.known = toks[k].text, true
		}
		if write {
			eff.writes = append(eff.writes, f)
		} else {
			eff.reads = append(eff.reads, f)
		}
	}
	for k, t := range toks {
		switch {
		case t.kind == 'i' && t.text == "system" && k+1 < len(toks) && toks[k+1].text == "(":
			eff.code = append(eff.code, "system() runs a shell command")
		case t.kind == 'i' && t.text == "@load":
			eff.code = append(eff.code, "@load loads a shared library")
		case t.kind == 'i' && strings.HasPrefix(t.text, "@") && t.text != "@include" && t.text != "@namespace" && k+1 < len(toks) && toks[k+1].text == "(":
			eff.code = append(eff.code, "an indirect call ("+t.text+"(...)) can call any function, system() included")
		case t.kind == 'i' && (t.text == "print" || t.text == "printf"):
			inPrint, printDepth = true, depth
		case t.kind == 'i' && t.text == "getline":
			if k+1 < len(toks) && toks[k+1].text == "<" {
				target(k+2, "awk getline <", false)
			} else if k+2 < len(toks) && toks[k+1].kind == 'i' && toks[k+2].text == "<" {
				target(k+3, "awk getline <", false)
			}
		case t.text == "|" || t.text == "|&":
			eff.code = append(eff.code, "a pipe ("+t.text+") runs a shell command")
		case t.text == "(" || t.text == "[":
			depth++
		case t.text == ")" || t.text == "]":
			depth--
		case t.text == "{" || t.text == "}" || t.text == ";":
			inPrint = false
			if t.text != ";" {
				depth = 0
			}
		case (t.text == ">" || t.text == ">>") && inPrint && depth == printDepth:
			target(k+1, "awk print "+t.text, true)
		}
	}
	return eff
}

// awkKeywords are words after which a `/` starts a regular expression.
var awkKeywords = setOf("BEGIN", "END", "BEGINFILE", "ENDFILE", "if", "else", "while", "for", "do", "in",
	"return", "print", "printf", "getline", "delete", "exit", "next", "nextfile", "case", "switch",
	"default", "function", "func", "break", "continue")

// sedEffects reads a sed script (GNU sed) command by command.
//
// It finds the e command and the e flag of s (run a command), w and W and
// the w flag of s (write a file; the name runs to the end of the line),
// r and R (read a file). Text of a, i and c, labels, y and the parts of s
// are skipped with their delimiters.
func sedEffects(src string) scriptEffect {
	var eff scriptEffect
	rs := []rune(src)
	i := 0
	eol := func() string { // the rest of the line (a file name)
		j := i
		for j < len(rs) && rs[j] != '\n' {
			j++
		}
		s := string(rs[i:j])
		i = j
		return s
	}
	skipBlank := func() {
		for i < len(rs) && (rs[i] == ' ' || rs[i] == '\t') {
			i++
		}
	}
	// delimited skips a part ending at delim (after the opening one),
	// honouring backslash escapes; ok is false if it does not end.
	delimited := func(delim rune) bool {
		for i < len(rs) {
			switch {
			case rs[i] == '\\' && i+1 < len(rs):
				i += 2
			case rs[i] == delim:
				i++
				return true
			case rs[i] == '\n' && delim != '\n':
				return false
			default:
				i++
			}
		}
		return false
	}
	fail := func(why string) scriptEffect {
		eff.unreadable = why
		return eff
	}
	for i < len(rs) {
		r := rs[i]
		switch {
		case unicode.IsSpace(r) || r == ';' || r == '}' || r == '!' || r == '{':
			i++
			continue
		case r == '#':
			eol()
			continue
		}
		// Addresses: numbers, $, /re/, \cREc, first~step, addr,addr, +N, ~N.
		for i < len(rs) {
			c := rs[i]
			switch {
			case unicode.IsDigit(c) || c == '$' || c == ',' || c == '~' || c == '+' || c == ' ':
				i++
				continue
			case c == '/':
				i++
				if !delimited('/') {
					return fail("a sed address is not closed")
				}
				for i < len(rs) && (rs[i] == 'I' || rs[i] == 'M') {
					i++
				}
				continue
			case c == '\\' && i+1 < len(rs):
				d := rs[i+1]
				i += 2
				if !delimited(d) {
					return fail("a sed address is not closed")
				}
				for i < len(rs) && (rs[i] == 'I' || rs[i] == 'M') {
					i++
				}
				continue
			}
			break
		}
		skipBlank()
		for i < len(rs) && rs[i] == '!' {
			i++
			skipBlank()
		}
		if i >= len(rs) {
			break
		}
		cmd := rs[i]
		i++
		switch cmd {
		case '{', '}', '=', 'd', 'D', 'g', 'G', 'h', 'H', 'n', 'N', 'p', 'P', 'x', 'z', 'F':
		case 'l', 'L', 'q', 'Q':
			skipBlank()
			for i < len(rs) && unicode.IsDigit(rs[i]) {
				i++
			}
		case ':', 'b', 't', 'T', 'v':
			// a label runs to ';' or the end of the line
			for i < len(rs) && rs[i] != '\n' && rs[i] != ';' {
				i++
			}
		case 'a', 'i', 'c':
			// text: to the end of the line, with backslash-newline going on
			for i < len(rs) && rs[i] != '\n' {
				if rs[i] == '\\' && i+1 < len(rs) {
					i++
				}
				i++
			}
		case 'e':
			skipBlank()
			c := strings.TrimSpace(eol())
			if c == "" {
				eff.code = append(eff.code, "the e command runs the pattern space as a shell command")
			} else {
				eff.code = append(eff.code, "the e command runs `"+c+"`")
			}
		case 'r', 'R':
			skipBlank()
			name := eol()
			eff.reads = append(eff.reads, scriptFile{name: name, known: true, what: "sed " + string(cmd)})
		case 'w', 'W':
			skipBlank()
			name := eol()
			eff.writes = append(eff.writes, scriptFile{name: name, known: true, what: "sed " + string(cmd)})
		case 'y':
			if i >= len(rs) {
				return fail("a sed y command is not complete")
			}
			d := rs[i]
			i++
			if !delimited(d) || !delimited(d) {
				return fail("a sed y command is not closed")
			}
		case 's':
			if i >= len(rs) || rs[i] == '\n' || rs[i] == '\\' {
				return fail("a sed s command has no delimiter")
			}
			d := rs[i]
			i++
			if !delimited(d) || !sedReplacement(rs, &i, d) {
				return fail("a sed s command is not closed")
			}
			// flags
			for i < len(rs) {
				f := rs[i]
				if f == 'w' {
					i++
					skipBlank()
					name := eol()
					eff.writes = append(eff.writes, scriptFile{name: name, known: true, what: "sed s///w"})
					break
				}
				if f == 'e' {
					eff.code = append(eff.code, "the e flag of s runs the result as a shell command")
				}
				if f == '\n' || f == ';' || f == '}' || f == '#' {
					break
				}
				if !strings.ContainsRune("gpiImMe0123456789 \t", f) {
					return fail("a sed s command has the unknown flag " + string(f))
				}
				i++
			}
		default:
			return fail("sed command " + string(cmd) + " is not one the policy knows")
		}
	}
	return eff
}

// sedReplacement skips the replacement of an s command up to its closing
// delimiter; a backslash-newline continues it.
func sedReplacement(rs []rune, i *int, d rune) bool {
	for *i < len(rs) {
		switch {
		case rs[*i] == '\\' && *i+1 < len(rs):
			*i += 2
		case rs[*i] == d:
			*i++
			return true
		default:
			*i++
		}
	}
	return false
}
