package policy

import (
	"io"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/polos-run/polos/perr"
	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/syntax"
)

// fuzzAllow are the allow rules of the fuzzed policy (default ask).
var fuzzAllow = []string{"node *", "cat *", "echo *", "ls *", "ls", "git diff", "pnpm test", "grep -r * src"}

// oraclePattern is an independent reading of a command pattern: `*` is
// any text, everything else literal.
func oraclePattern(p string) *regexp.Regexp {
	parts := strings.Split(normalizePattern(p), "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile(`(?s)^` + strings.Join(parts, ".*") + `$`)
}

// oracleWords expands the words of a simple command with mvdan's own
// expander, every variable and substitution replaced by an arbitrary value.
// If the policy allowed the command, the allow rule must hold for this value
// too.
func oracleWords(words []*syntax.Word, value string) (string, bool) {
	cfg := &expand.Config{
		Env: expand.FuncEnviron(func(name string) string {
			if name == "IFS" {
				return ""
			}
			return value
		}),
		CmdSubst: func(w io.Writer, _ *syntax.CmdSubst) error {
			_, err := io.WriteString(w, value)
			return err
		},
		ProcSubst: func(*syntax.ProcSubst) (string, error) { return "/dev/fd/63", nil },
	}
	fields, err := expand.Fields(cfg, words...)
	if err != nil {
		return "", false
	}
	return strings.Join(fields, " "), true
}

// FuzzNoAllowWithoutAllowRule checks the central promise: no input reaches
// allow unless every simple command in it matches an allow rule.
func FuzzNoAllowWithoutAllowRule(f *testing.F) {
	for _, tc := range hostileCommands {
		f.Add(tc.cmd)
	}
	for _, s := range []string{"ls && echo done", "cat a | node x.js", "echo $(ls)", "git diff; ls", "a=1", "ls\n\necho", "grep -r foo src"} {
		f.Add(s)
	}
	p, err := New(Config{Commands: CommandRules{Allow: fuzzAllow}})
	if err != nil {
		f.Fatal(err)
	}
	var oracles []*regexp.Regexp
	for _, a := range fuzzAllow {
		oracles = append(oracles, oraclePattern(a))
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		r := p.CheckCommand(cmd, seedContext)
		if r.Decision != DecisionAllow {
			return
		}
		file, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(cmd), "")
		if err != nil {
			t.Fatalf("%q was allowed but bash cannot parse it: %v", cmd, err)
		}
		syntax.Walk(file, func(n syntax.Node) bool {
			switch x := n.(type) {
			case *syntax.CallExpr:
				words := x.Args
				if len(words) == 0 {
					for _, as := range x.Assigns {
						t.Fatalf("%q was allowed but holds the assignment %v, which no allow rule matches", cmd, as.Name)
					}
				}
				for _, value := range []string{"Zq9", "", "-x y"} {
					text, ok := oracleWords(words, value)
					if !ok {
						continue // the expander cannot evaluate it; covered by the table
					}
					if !oracleAllows(oracles, text) {
						t.Fatalf("%q was allowed but its simple command %q matches no allow rule\n%s", cmd, text, explain(r))
					}
				}
				return true
			case *syntax.DeclClause, *syntax.TestClause, *syntax.ArithmCmd, *syntax.LetClause:
				t.Fatalf("%q was allowed but holds %T, which no allow rule matches", cmd, x)
			default:
				return true
			}
			return true
		})
	})
}

// oracleAllows: some allow rule matches the text, or the text with a
// program from a system directory (/usr/bin/ls) named by its base name.
func oracleAllows(oracles []*regexp.Regexp, text string) bool {
	texts := []string{text}
	if prog, rest, _ := strings.Cut(text, " "); systemBinDirs[path.Dir(prog)] && path.Clean(prog) == prog {
		texts = append(texts, strings.TrimSuffix(path.Base(prog)+" "+rest, " "))
	}
	for _, o := range oracles {
		for _, t := range texts {
			if o.MatchString(t) {
				return true
			}
		}
	}
	return false
}

// FuzzCheckCommandTotal: any input gets a decision with a reason, never a
// panic, and the same decision twice.
func FuzzCheckCommandTotal(f *testing.F) {
	for _, tc := range hostileCommands {
		f.Add(tc.cmd)
	}
	policies := make([]*Policy, 0, len(seedPolicies))
	for _, cfg := range seedPolicies {
		p, err := New(cfg)
		if err != nil {
			f.Fatal(err)
		}
		policies = append(policies, p)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		for _, p := range policies {
			r1 := p.CheckCommand(cmd, seedContext)
			r2 := p.CheckCommand(cmd, seedContext)
			if !r1.Decision.Valid() || len(r1.Reasons) == 0 || r1.Reasons[0].Decision != r1.Decision {
				t.Fatalf("%q: bad result %+v", cmd, r1)
			}
			if r1.Decision != r2.Decision || len(r1.Reasons) != len(r2.Reasons) {
				t.Fatalf("%q: not deterministic: %+v then %+v", cmd, r1, r2)
			}
		}
	})
}

// FuzzParse: a policy file never panics the parser, and every error is
// coded.
func FuzzParse(f *testing.F) {
	f.Add([]byte("commands: {allow: [\"ls\"], deny: [\"sudo *\"]}\ndefault: deny\n"))
	f.Add([]byte("exec: {security: allowlist, allowlist: [\"node *\"]}\nfile_approval: none\n"))
	f.Add([]byte("capabilities: {network: ask}\npaths: {deny: [\"**/.env\"]}\n"))
	f.Add([]byte("commands: [1, 2]\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if perr.CodeOf(err) != CodeInvalid {
				t.Fatalf("uncoded error: %v", err)
			}
			return
		}
		if p.Digest() == "" {
			t.Fatal("no digest")
		}
	})
}
