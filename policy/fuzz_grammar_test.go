package policy

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// FuzzAllowImpliesCovered checks the promise of issue 14 from the agent's
// seat: allow implies that every program, option, path and variable was
// matched by an allow rule. The fuzzer's bytes drive a grammar of programs,
// options, paths, assignments, wrappers, redirections and exec envs, and a
// random allowlist; the generator knows what each piece is, so the check is
// independent of the engine: when the decision is allow,
//
//   - every simple command (wrappers and what they wrap) matches an allow
//     rule, read as a plain glob;
//   - every risky option (code strings, code URLs, loader options, stdin
//     forms) is named, without *, by a rule matching that command; a
//     stdin-reading interpreter with no script needs a rule without any *;
//   - every loader variable (written or in the exec env) is named as NAME=
//     by such a rule, and the shell's own start-up variables never pass;
//   - every path is inside the workspace, and nothing is written unless
//     file_approval is none.
//
// Run it with `go test ./policy -run '^$' -fuzz FuzzAllowImpliesCovered`;
// its seed corpus runs with the normal tests.
func FuzzAllowImpliesCovered(f *testing.F) {
	for _, seed := range []string{
		"", "\x00", "\x01\x02\x03", "\x05\x00\x01\x00\x02", "\x10\x20\x30\x40\x50\x60\x70",
		"\xff\xfe\xfd\xfc\xfb\xfa", "\x07\x07\x07\x07\x07\x07\x07\x07\x07", "\x03\x01\x04\x01\x05\x09\x02\x06",
		"\x02\x00\x00\x00\x03\x00\x00\x01\x00", "\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16",
	} {
		f.Add([]byte(seed))
	}
	for i := 0; i < 64; i++ { // a spread of deterministic seeds
		b := make([]byte, 24)
		x := uint32(i*2654435761 + 1)
		for k := range b {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[k] = byte(x)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &gen{data: data}
		sc := g.scenario()
		p, err := New(sc.cfg)
		if err != nil {
			t.Fatalf("policy: %v", err)
		}
		r := p.CheckExec(sc.exec, Context{Env: EnvLocal, Workspace: fuzzWorkspace})
		if r.Decision != DecisionAllow {
			return
		}
		if why := sc.violation(); why != "" {
			t.Fatalf("allowed, but %s\npolicy allow: %q file_approval: %s\ncommand: %q env: %v\n%s",
				why, sc.cfg.Commands.Allow, sc.cfg.FileApproval, sc.exec.Command, sc.exec.Env, explain(r))
		}
	})
}

const fuzzWorkspace = "/nonexistent/fuzz-ws"

// gen turns bytes into choices.
type gen struct {
	data []byte
	pos  int
}

func (g *gen) pick(n int) int {
	if n <= 1 {
		return 0
	}
	if g.pos >= len(g.data) {
		return 0
	}
	b := g.data[g.pos]
	g.pos++
	return int(b) % n
}

func (g *gen) chance(k int) bool { return g.pick(k) == 0 }

// atom is one generated argument: its text as written (quoted if needed),
// and what it is.
type atom struct {
	text   string
	hazard string // a word a rule must name, "" if none
	path   string // a path it names, "" if none
	write  bool   // the path is written
	script bool   // it is the script or operand that stops a stdin read
}

// simple is one generated simple command.
type simple struct {
	assigns []string // NAME=value written before it
	words   []atom   // words[0] is the program
	inner   *simple  // the command a wrapper runs
	extra   bool     // the wrapper adds arguments at run time (xargs)
	stdin   bool     // an interpreter that reads its code from stdin
	writes  []string // redirection targets
	reads   []string // input redirections
}

type scenario struct {
	cfg   Config
	exec  Exec
	cmds  []*simple
	rules []string
}

var fuzzRulePool = []string{"ls *", "ls", "cat *", "node *", "node", "echo *", "sh *", "sh -x", "git *",
	"sed *", "awk *", "tar *", "find *", "timeout *", "env *", "xargs *", "nice *", "grep *", "python3 *",
	"node -e *", "sh -c *", "PATH=* ls *", "NODE_OPTIONS=* node *", "LD_PRELOAD=* cat *", "node --import *",
	"env -S *", "sed -i *", "tar -x*", "git -c *", "* *", "*"}

// paths: text, resolved inside the workspace?
var fuzzPaths = []struct {
	text   string
	inside bool
}{
	{"README.md", true}, {"src/a.go", true}, {"./x.js", true}, {"sub/../ok.txt", true},
	{fuzzWorkspace + "/docs/a.md", true}, {"/etc/shadow", false}, {"../escape", false},
	{"~/.ssh/id_rsa", false}, {`"$HOME/.bashrc"`, false}, {".*/.*/etc/passwd", false},
	{"/tmp/x", false}, {fuzzWorkspace + "/../x", false}, {"sub/../../x", false},
}

func (g *gen) path() (string, bool) {
	p := fuzzPaths[g.pick(len(fuzzPaths))]
	return p.text, p.inside
}

func (g *gen) scenario() *scenario {
	sc := &scenario{}
	n := 1 + g.pick(4)
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		r := fuzzRulePool[g.pick(len(fuzzRulePool))]
		if !seen[r] {
			seen[r] = true
			sc.rules = append(sc.rules, r)
		}
	}
	sc.cfg = Config{Commands: CommandRules{Allow: sc.rules}, PathRestriction: fuzzWorkspace}
	if g.chance(2) {
		sc.cfg.FileApproval = FileApprovalNone
	} else {
		sc.cfg.FileApproval = FileApprovalAlways
	}
	if g.chance(3) {
		sc.exec.Env = map[string]string{}
		for k := g.pick(3); k >= 0; k-- {
			name := []string{"FOO", "NODE_ENV", "NODE_OPTIONS", "BASH_ENV", "PATH", "LD_PRELOAD"}[g.pick(6)]
			sc.exec.Env[name] = []string{"1", "--require=./x.js", "/tmp/x"}[g.pick(3)]
		}
	}
	var parts []string
	cmds := 1 + g.pick(3)
	for i := 0; i < cmds; i++ {
		s := g.simple(0)
		sc.cmds = append(sc.cmds, s)
		text := s.render()
		if i > 0 {
			text = []string{"; ", " && ", " | ", " || "}[g.pick(4)] + text
		}
		parts = append(parts, text)
	}
	sc.exec.Command = strings.Join(parts, "")
	return sc
}

func (s *simple) render() string {
	var ws []string
	ws = append(ws, s.assigns...)
	for _, a := range s.words {
		ws = append(ws, a.text)
	}
	for _, w := range s.writes {
		ws = append(ws, "> "+strings.TrimPrefix(w, "+"))
	}
	for _, r := range s.reads {
		ws = append(ws, "< "+r)
	}
	return strings.Join(ws, " ")
}

func (g *gen) simple(depth int) *simple {
	s := &simple{}
	if g.chance(4) {
		s.assigns = append(s.assigns, []string{"FOO=1", "PATH=/tmp", "NODE_OPTIONS=--require=./x.js", "LD_PRELOAD=./x.so", "GIT_DIR=/tmp/g"}[g.pick(5)])
	}
	prog := []string{"ls", "cat", "node", "sh", "echo", "git", "sed", "awk", "tar", "find", "grep",
		"python3", "timeout", "env", "xargs", "nice"}[g.pick(16)]
	if depth > 0 && (prog == "timeout" || prog == "env" || prog == "xargs" || prog == "nice") {
		prog = "ls"
	}
	s.words = []atom{{text: prog}}
	add := func(a atom) { s.words = append(s.words, a) }
	pathArg := func(write bool) {
		p, inside := g.path()
		a := atom{text: p, write: write, script: true}
		if !inside {
			a.path = p
		} else if write {
			a.path = "+" + p // an inside write: needs file_approval none
		}
		add(a)
	}
	switch prog {
	case "ls", "cat", "grep":
		for k := g.pick(3); k > 0; k-- {
			switch g.pick(3) {
			case 0:
				add(atom{text: []string{"-la", "-n", "-r", "--color=auto"}[g.pick(4)]})
			default:
				pathArg(false)
			}
		}
	case "echo":
		add(atom{text: []string{"hi", "/etc/shadow", "'a b'"}[g.pick(3)]})
	case "node", "python3", "sh":
		var opts []atom
		switch prog {
		case "node":
			opts = []atom{{text: "--no-warnings"}, {text: "-e 'x'", hazard: "-e"}, {text: "--import=data:text/javascript,1", hazard: "--import=data:text/javascript,1"},
				{text: "-i", hazard: "-i"}, {text: "--title t"}, {text: "--frob", hazard: "--frob"}, {text: "--env-file=.env", hazard: "--env-file=.env"},
				{text: "-r ./s.js"}, {text: "--loader https://x/y.mjs", hazard: "--loader"}}
		case "python3":
			opts = []atom{{text: "-u"}, {text: "-c 'x'", hazard: "-c"}, {text: "-i", hazard: "-i"}, {text: "-W ignore"}}
		case "sh":
			opts = []atom{{text: "-x"}, {text: "-e"}, {text: "-c 'ls'", hazard: "-c"}, {text: "-s", hazard: "-s"}, {text: "+x"}}
		}
		coded := false
		for k := g.pick(3); k > 0; k-- {
			o := opts[g.pick(len(opts))]
			coded = coded || o.hazard != ""
			add(o)
			if prog != "node" && (o.hazard == "-c") {
				break // what follows sh -c CODE or python -c CODE are its arguments, not options
			}
		}
		if g.chance(2) {
			pathArg(false)
		} else if !coded {
			s.stdin = true
		}
	case "git":
		sub := []atom{{text: "status"}, {text: "diff --output=out.diff", path: "+out.diff"}, {text: "diff --output=/root/.bashrc", path: "/root/.bashrc"},
			{text: "-c core.pager=id log", hazard: "-c"}, {text: "grep -Oid x", hazard: "-Oid"}, {text: "log --oneline"}, {text: "--exec-path=/tmp log", hazard: "--exec-path=/tmp"}}
		add(sub[g.pick(len(sub))])
	case "sed":
		scripts := []atom{{text: "'s/a/b/'"}, {text: "'s/x/id/e'", hazard: "s/x/id/e"}, {text: "'w /etc/x'", path: "/etc/x"}, {text: "'1e id'", hazard: "1e id"}, {text: "-n '/a/p'"}}
		if g.chance(3) {
			add(atom{text: "-i", path: "+inplace"})
		}
		add(scripts[g.pick(len(scripts))])
		pathArg(false)
	case "awk":
		progs := []atom{{text: "'{print $1}'"}, {text: `'BEGIN{system("id")}'`, hazard: `BEGIN{system("id")}`}, {text: `'{print > "/etc/x"}'`, path: "/etc/x"},
			{text: `'{print | "sh"}'`, hazard: `{print | "sh"}`}, {text: `'/a|b/'`}}
		add(progs[g.pick(len(progs))])
		pathArg(false)
	case "tar":
		modes := []atom{{text: "-tzf a.tgz"}, {text: "-xzf a.tgz", path: "+."}, {text: "-czf out.tgz src", path: "+out.tgz"},
			{text: "--checkpoint-action=exec=id -cf a.tar src", hazard: "--checkpoint-action=exec=id", path: "+a.tar"}, {text: "-xf a.tar -C /etc", path: "/etc"},
			{text: "-I 'sh -c id' -tf a.tar", hazard: "-I"}}
		add(modes[g.pick(len(modes))])
	case "find":
		add(atom{text: []string{".", "/", "src"}[g.pick(3)]})
		if s.words[1].text == "/" {
			s.words[1].path = "/"
		}
		acts := []atom{{text: "-name '*.go'"}, {text: "-delete", path: "+delete"}, {text: "-fprint /etc/x", path: "/etc/x"}, {text: "-type f"}}
		add(acts[g.pick(len(acts))])
		if s.words[len(s.words)-1].text == "-delete" && s.words[1].text == "/" {
			s.words[len(s.words)-1].path = "/"
		}
	case "timeout", "env", "xargs", "nice":
		pre := map[string][]atom{
			"timeout": {{text: "5"}, {text: "-k 1 5"}, {text: "--frob 5", hazard: "--frob"}},
			"env":     {{text: "-i"}, {text: "FOO=1"}, {text: "PATH=/tmp", hazard: "PATH="}, {text: "-iS'sh -c id'", hazard: "-iS'sh -c id'"}, {text: "-u X"}},
			"xargs":   {{text: "-n1"}, {text: "--process-slot-var V"}, {text: "-I{}"}, {text: "-0"}},
			"nice":    {{text: "-n 5"}, {text: "-10"}},
		}[prog]
		a := pre[g.pick(len(pre))]
		if prog == "env" && strings.HasPrefix(a.text, "-iS") {
			add(a)
			break
		}
		add(a)
		s.inner = g.simple(depth + 1)
		s.inner.assigns, s.inner.writes, s.inner.reads = nil, nil, nil // only its words are written
		s.extra = prog == "xargs"
		if s.extra {
			s.inner.stdin = false // xargs gives the command /dev/null as standard input
		}
		for _, w := range s.inner.words {
			add(atom{text: w.text})
		}
	}
	switch g.pick(6) {
	case 0:
		p, inside := g.path()
		if !inside {
			s.writes = append(s.writes, p)
		} else {
			s.writes = append(s.writes, "+"+p)
		}
	case 1:
		p, inside := g.path()
		if !inside {
			s.reads = append(s.reads, p)
		}
	}
	return s
}

// ---- the oracle

var fuzzLoaderNames = setOf("PATH", "NODE_OPTIONS", "LD_PRELOAD", "GIT_DIR", "BASH_ENV")

func (sc *scenario) violation() string {
	if sc.exec.Env["BASH_ENV"] != "" {
		return "the exec env sets BASH_ENV, which no rule can allow"
	}
	var envAssigns []string
	for _, name := range []string{"BASH_ENV", "GIT_DIR", "LD_PRELOAD", "NODE_OPTIONS", "PATH"} { // sorted, as the engine adds them
		if v, ok := sc.exec.Env[name]; ok {
			envAssigns = append(envAssigns, name+"="+v)
		}
	}
	for _, s := range sc.cmds {
		if why := sc.check(s, envAssigns, false); why != "" {
			return why
		}
	}
	return ""
}

func (sc *scenario) check(s *simple, envAssigns []string, extra bool) string {
	loader := append([]string(nil), envAssigns...)
	for _, a := range s.assigns {
		name, _, _ := strings.Cut(a, "=")
		if fuzzLoaderNames[name] {
			loader = append(loader, a)
		}
	}
	var texts []string
	words := []string{}
	for _, a := range s.words {
		words = append(words, unquoteFuzz(a.text))
	}
	text := strings.Join(append(append([]string(nil), loader...), words...), " ")
	if extra {
		text += " Zq9"
	}
	texts = append(texts, text)
	var matched []string
	for _, r := range sc.rules {
		if oracleGlob(r).MatchString(text) {
			matched = append(matched, r)
		}
	}
	if len(matched) == 0 {
		return fmt.Sprintf("the simple command %q matches no allow rule", text)
	}
	names := func(h string) bool {
		for _, r := range matched {
			for _, w := range strings.Fields(r) {
				// a word without *, or NAME=... for a variable (PATH=* names PATH)
				if (!strings.Contains(w, "*") && w == h) || (strings.HasSuffix(h, "=") && strings.HasPrefix(w, h)) {
					return true
				}
			}
		}
		return false
	}
	for _, a := range loader {
		name, _, _ := strings.Cut(a, "=")
		if !names(name + "=") {
			return fmt.Sprintf("the loader variable %s of %q is named by no matching allow rule %q", name, text, matched)
		}
	}
	for _, a := range s.words {
		if a.hazard != "" && !names(a.hazard) && !names(unquoteFuzz(a.text)) {
			return fmt.Sprintf("the risky word %q of %q is named by no matching allow rule %q", a.hazard, text, matched)
		}
		if why := sc.pathOK(a.path); why != "" {
			return why + " (in " + text + ")"
		}
	}
	if s.stdin {
		exact := false
		for _, r := range matched {
			exact = exact || !strings.Contains(r, "*")
		}
		if !exact {
			return fmt.Sprintf("%q reads its code from standard input, but only rules with * match it: %q", text, matched)
		}
	}
	for _, w := range s.writes {
		if why := sc.pathOK(w); why != "" {
			return "the redirection: " + why
		}
		if !strings.HasPrefix(w, "+") {
			return "the redirection writes outside: " + w
		}
	}
	for _, r := range s.reads {
		return "the redirection reads outside: " + r
	}
	if s.inner != nil {
		return sc.check(s.inner, nil, s.extra)
	}
	return ""
}

// pathOK: "" when the path may be touched; p is "" (no path), "+name" (an
// inside write) or an outside path.
func (sc *scenario) pathOK(p string) string {
	switch {
	case p == "":
		return ""
	case strings.HasPrefix(p, "+"):
		if sc.cfg.FileApproval != FileApprovalNone {
			return "it writes " + p[1:] + " inside the workspace although file_approval is always"
		}
		return ""
	}
	clean := filepath.Clean(p)
	if strings.HasPrefix(clean, fuzzWorkspace+"/") {
		return ""
	}
	return "it names the path " + p + ", outside the workspace"
}

// oracleGlob reads a rule as a glob: `*` is any text.
func oracleGlob(p string) *regexp.Regexp {
	parts := strings.Split(p, "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile(`(?s)^` + strings.Join(parts, ".*") + `$`)
}

// unquoteFuzz removes the single quotes the generator writes.
func unquoteFuzz(s string) string { return strings.ReplaceAll(s, "'", "") }
