// Package sandboxtest is the conformance suite every sandbox provider
// (local, docker, e2b, and the NATS dispatch client in front of any of them)
// must pass. It exercises the six tools and the attacks that apply to every
// provider: "..", absolute paths outside the workspace, symlinks in the leaf
// and in a parent directory (planted with exec "ln -s", so it works inside
// containers), exec timeouts killing background children, background
// children not hanging exec, output truncation, ANSI stripping, hostile file
// names, and env passing.
//
// Run creates ONE sandbox and runs every check in its own subdirectory of
// the workspace, so container providers pay one start-up. The sandbox's
// shell must be POSIX sh with mkdir, ln, printf, head, tr, sleep, kill, cat,
// mktemp and rm.
package sandboxtest

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// Deadlines, generous for a noisy shared machine.
const (
	opTimeout   = 60 * time.Second
	pollTimeout = 20 * time.Second
)

// Run runs the conformance suite against the provider newProvider returns,
// creating a sandbox from the returned Spec (destroyed at the end).
func Run(t *testing.T, newProvider func(t *testing.T) (sandbox.Provider, sandbox.Spec)) {
	t.Helper()
	p, spec := newProvider(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	sb, err := p.Create(ctx, spec)
	if err != nil {
		t.Fatalf("Create(%+v): %v", spec, err)
	}
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(sandbox.WithRun(context.Background(), spec.Owner), opTimeout)
		defer dcancel()
		if err := p.Destroy(dctx, sb.Info()); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	s := &suite{p: p, spec: spec, sb: sb, info: sb.Info()}
	for _, c := range []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"Info", s.testInfo},
		{"Open", s.testOpen},
		{"WriteRead", s.testWriteRead},
		{"ReadRefusals", s.testReadRefusals},
		{"Edit", s.testEdit},
		{"Glob", s.testGlob},
		{"GlobCap", s.testGlobCap},
		{"Grep", s.testGrep},
		{"Exec", s.testExec},
		{"ExecEnv", s.testExecEnv},
		{"ExecANSI", s.testExecANSI},
		{"ExecTruncation", s.testExecTruncation},
		{"ExecTimeoutKillsBackground", s.testExecTimeout},
		{"ExecBackgroundChildDoesNotHang", s.testExecBackground},
		{"EscapeDotDot", s.testEscapeDotDot},
		{"EscapeAbsolute", s.testEscapeAbsolute},
		{"EscapeSymlinkLeaf", s.testEscapeSymlinkLeaf},
		{"EscapeSymlinkParent", s.testEscapeSymlinkParent},
		{"HostileNames", s.testHostileNames},
	} {
		t.Run(c.name, c.fn)
	}
}

type suite struct {
	p    sandbox.Provider
	spec sandbox.Spec
	sb   sandbox.Sandbox
	info sandbox.Info
}

func opCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// sh runs command in the sandbox and fails the test unless it exits 0.
func (s *suite) sh(t *testing.T, command string) string {
	t.Helper()
	res, err := s.sb.Exec(opCtx(t), sandbox.ExecRequest{Command: command, TimeoutSec: 60})
	if err != nil {
		t.Fatalf("exec %q: %v", command, err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exec %q: exit %d, stdout %q, stderr %q", command, res.ExitCode, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

// quote quotes s for sh: the suite's own commands, never the tools', are
// built this way.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// dir makes a fresh directory for one check and returns its workspace path.
func (s *suite) dir(t *testing.T) string {
	t.Helper()
	d := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	s.sh(t, "rm -rf "+quote(d)+" && mkdir -p "+quote(d))
	return d
}

// outsideDir makes a directory outside the workspace holding "target" with
// content "secret\n", and returns its absolute path.
func (s *suite) outsideDir(t *testing.T) string {
	t.Helper()
	d := strings.TrimSpace(s.sh(t, `d=$(mktemp -d) && printf 'secret\n' > "$d/target" && printf %s "$d"`))
	if d == "" || strings.HasPrefix(d, s.info.Workspace+"/") {
		t.Fatalf("mktemp -d gave %q, which is not outside the workspace %s", d, s.info.Workspace)
	}
	t.Cleanup(func() {
		s.sb.Exec(context.Background(), sandbox.ExecRequest{Command: "rm -rf " + quote(d), TimeoutSec: 60})
	})
	return d
}

func wantCode(t *testing.T, what string, err error, code perr.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want %s", what, code)
	}
	if !perr.Has(err, code) {
		t.Fatalf("%s: got %v (code %q), want code %s", what, err, perr.CodeOf(err), code)
	}
}

func noErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func (s *suite) write(t *testing.T, p, content string) {
	t.Helper()
	_, err := s.sb.Write(opCtx(t), sandbox.WriteRequest{Path: p, Content: content})
	noErr(t, "write "+p, err)
}

func (s *suite) read(t *testing.T, p string) string {
	t.Helper()
	res, err := s.sb.Read(opCtx(t), sandbox.ReadRequest{Path: p})
	noErr(t, "read "+p, err)
	return res.Content
}

// checkFor polls cond until it holds or pollTimeout passes.
func checkFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v", what, pollTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *suite) testInfo(t *testing.T) {
	if s.info.Provider != s.p.Name() {
		t.Errorf("Info.Provider = %q, want %q", s.info.Provider, s.p.Name())
	}
	if s.info.ID == "" {
		t.Error("Info.ID is empty")
	}
	if !path.IsAbs(s.info.Workspace) {
		t.Errorf("Info.Workspace = %q, want an absolute path", s.info.Workspace)
	}
}

func (s *suite) testOpen(t *testing.T) {
	d := s.dir(t)
	s.write(t, d+"/f.txt", "opened\n")
	sb2, err := s.p.Open(opCtx(t), s.info, s.spec)
	noErr(t, "Open", err)
	if sb2.Info().ID != s.info.ID {
		t.Errorf("Open gave ID %q, want %q", sb2.Info().ID, s.info.ID)
	}
	res, err := sb2.Read(opCtx(t), sandbox.ReadRequest{Path: d + "/f.txt"})
	noErr(t, "read through reopened sandbox", err)
	if res.Content != "opened\n" {
		t.Errorf("read through reopened sandbox = %q", res.Content)
	}
}

func (s *suite) testWriteRead(t *testing.T) {
	d := s.dir(t)
	content := "line1\nline2\nline3\nline4\nline5\n"
	res, err := s.sb.Write(opCtx(t), sandbox.WriteRequest{Path: d + "/a/b/c.txt", Content: content})
	noErr(t, "write with missing parents", err)
	if res.BytesWritten != len(content) {
		t.Errorf("BytesWritten = %d, want %d", res.BytesWritten, len(content))
	}
	if got := s.read(t, d+"/a/b/c.txt"); got != content {
		t.Errorf("read back %q, want %q", got, content)
	}
	if got := s.sh(t, "cat "+quote(d+"/a/b/c.txt")); got != content {
		t.Errorf("cat in sandbox gives %q, want %q", got, content)
	}
	if got := s.read(t, s.info.Workspace+"/"+d+"/a/b/c.txt"); got != content {
		t.Errorf("read by absolute path %q, want %q", got, content)
	}
	r, err := s.sb.Read(opCtx(t), sandbox.ReadRequest{Path: d + "/a/b/c.txt", Offset: 2, Limit: 2})
	noErr(t, "read offset 2 limit 2", err)
	if r.Content != "line2\nline3\n" || r.TotalLines != 5 || !r.Truncated {
		t.Errorf("read offset 2 limit 2 = %+v", r)
	}
	r, err = s.sb.Read(opCtx(t), sandbox.ReadRequest{Path: d + "/a/b/c.txt", Offset: 4})
	noErr(t, "read offset 4", err)
	if r.Content != "line4\nline5\n" || r.Truncated {
		t.Errorf("read offset 4 = %+v", r)
	}
	_, err = s.sb.Read(opCtx(t), sandbox.ReadRequest{Path: d + "/a/b/c.txt", Offset: 9})
	wantCode(t, "read past the end", err, sandbox.CodeBadRequest)

	s.write(t, d+"/a/b/c.txt", "short")
	if got := s.read(t, d+"/a/b/c.txt"); got != "short" {
		t.Errorf("overwrite left %q", got)
	}
	s.write(t, d+"/empty.txt", "")
	r, err = s.sb.Read(opCtx(t), sandbox.ReadRequest{Path: d + "/empty.txt"})
	noErr(t, "read empty file", err)
	if r.Content != "" || r.TotalLines != 0 {
		t.Errorf("read empty file = %+v", r)
	}

	_, err = s.sb.Read(opCtx(t), sandbox.ReadRequest{Path: d + "/missing.txt"})
	wantCode(t, "read missing file", err, sandbox.CodeNotFound)
	_, err = s.sb.Read(opCtx(t), sandbox.ReadRequest{Path: ""})
	wantCode(t, "read empty path", err, sandbox.CodeBadRequest)
	_, err = s.sb.Write(opCtx(t), sandbox.WriteRequest{Path: ""})
	wantCode(t, "write empty path", err, sandbox.CodeBadRequest)
}

func (s *suite) testReadRefusals(t *testing.T) {
	d := s.dir(t)
	s.sh(t, "cd "+quote(d)+` && printf 'a\000b' > nul.bin && printf 'ok\377\n' > latin1.txt && head -c 11000000 /dev/zero | tr '\000' a > big.txt`)
	_, err := s.sb.Read(opCtx(t), sandbox.ReadRequest{Path: d + "/nul.bin"})
	wantCode(t, "read file with NUL", err, sandbox.CodeBinaryFile)
	_, err = s.sb.Read(opCtx(t), sandbox.ReadRequest{Path: d + "/latin1.txt"})
	wantCode(t, "read invalid UTF-8", err, sandbox.CodeBinaryFile)
	_, err = s.sb.Read(opCtx(t), sandbox.ReadRequest{Path: d + "/big.txt"})
	wantCode(t, "read 11 MB file", err, sandbox.CodeTooLarge)
	_, err = s.sb.Edit(opCtx(t), sandbox.EditRequest{Path: d + "/nul.bin", OldText: "a", NewText: "c"})
	wantCode(t, "edit binary file", err, sandbox.CodeBinaryFile)
}

func (s *suite) testEdit(t *testing.T) {
	d := s.dir(t)
	f := d + "/e.txt"
	s.write(t, f, "alpha beta\ngamma beta\nunique\n")
	res, err := s.sb.Edit(opCtx(t), sandbox.EditRequest{Path: f, OldText: "unique", NewText: "single"})
	noErr(t, "edit once", err)
	if res.Replacements != 1 {
		t.Errorf("Replacements = %d, want 1", res.Replacements)
	}
	_, err = s.sb.Edit(opCtx(t), sandbox.EditRequest{Path: f, OldText: "beta", NewText: "delta"})
	wantCode(t, "edit of text found twice", err, sandbox.CodeEditMismatch)
	if !strings.Contains(err.Error(), "2 times") {
		t.Errorf("mismatch error does not give the count: %v", err)
	}
	_, err = s.sb.Edit(opCtx(t), sandbox.EditRequest{Path: f, OldText: "absent", NewText: "x"})
	wantCode(t, "edit of absent text", err, sandbox.CodeEditMismatch)
	if !strings.Contains(err.Error(), "0 times") {
		t.Errorf("mismatch error does not give the count: %v", err)
	}
	if got := s.read(t, f); got != "alpha beta\ngamma beta\nsingle\n" {
		t.Errorf("failed edits changed the file: %q", got)
	}
	res, err = s.sb.Edit(opCtx(t), sandbox.EditRequest{Path: f, OldText: "beta", NewText: "delta", ReplaceAll: true})
	noErr(t, "edit replace_all", err)
	if res.Replacements != 2 {
		t.Errorf("Replacements = %d, want 2", res.Replacements)
	}
	if got := s.read(t, f); got != "alpha delta\ngamma delta\nsingle\n" {
		t.Errorf("after replace_all: %q", got)
	}
	_, err = s.sb.Edit(opCtx(t), sandbox.EditRequest{Path: d + "/missing", OldText: "a", NewText: "b"})
	wantCode(t, "edit missing file", err, sandbox.CodeNotFound)
	_, err = s.sb.Edit(opCtx(t), sandbox.EditRequest{Path: f, OldText: "", NewText: "b"})
	wantCode(t, "edit empty old_text", err, sandbox.CodeBadRequest)
}

func (s *suite) glob(t *testing.T, req sandbox.GlobRequest) sandbox.GlobResult {
	t.Helper()
	res, err := s.sb.Glob(opCtx(t), req)
	noErr(t, fmt.Sprintf("glob %+v", req), err)
	return res
}

func wantFiles(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func (s *suite) testGlob(t *testing.T) {
	d := s.dir(t)
	for _, f := range []string{"src/a.js", "src/lib/b.js", "src/lib/deep/c.js", "src/d.ts", "node_modules/x/y.js", ".git/hooks/h.js", "top.js"} {
		s.write(t, d+"/"+f, "x\n")
	}
	wantFiles(t, "src/**/*.js", s.glob(t, sandbox.GlobRequest{Pattern: "src/**/*.js", Cwd: d}).Files,
		d+"/src/a.js", d+"/src/lib/b.js", d+"/src/lib/deep/c.js")
	wantFiles(t, "**/*.js (skips .git, node_modules)", s.glob(t, sandbox.GlobRequest{Pattern: "**/*.js", Cwd: d}).Files,
		d+"/src/a.js", d+"/src/lib/b.js", d+"/src/lib/deep/c.js", d+"/top.js")
	wantFiles(t, "node_modules/**/*.js", s.glob(t, sandbox.GlobRequest{Pattern: "node_modules/**/*.js", Cwd: d}).Files,
		d+"/node_modules/x/y.js")
	wantFiles(t, "*.js", s.glob(t, sandbox.GlobRequest{Pattern: "*.js", Cwd: d}).Files, d+"/top.js")
	wantFiles(t, "**/*.js ignoring src/lib/**", s.glob(t, sandbox.GlobRequest{Pattern: "**/*.js", Cwd: d, Ignore: []string{"src/lib/**"}}).Files,
		d+"/src/a.js", d+"/top.js")
	wantFiles(t, "absolute pattern", s.glob(t, sandbox.GlobRequest{Pattern: s.info.Workspace + "/" + d + "/src/*.ts"}).Files,
		s.info.Workspace+"/"+d+"/src/d.ts")
	wantFiles(t, "pattern from the workspace root", s.glob(t, sandbox.GlobRequest{Pattern: d + "/src/lib/**/*.js"}).Files,
		d+"/src/lib/b.js", d+"/src/lib/deep/c.js")
	_, err := s.sb.Glob(opCtx(t), sandbox.GlobRequest{Pattern: "src/[", Cwd: d})
	wantCode(t, "glob with invalid pattern", err, sandbox.CodeBadRequest)
	_, err = s.sb.Glob(opCtx(t), sandbox.GlobRequest{Pattern: "*", Cwd: d + "/missing"})
	wantCode(t, "glob in missing cwd", err, sandbox.CodeNotFound)
}

func (s *suite) testGlobCap(t *testing.T) {
	d := s.dir(t)
	s.sh(t, "cd "+quote(d)+` && i=0 && while [ $i -lt 1005 ]; do : > "f$i.txt"; i=$((i+1)); done`)
	res := s.glob(t, sandbox.GlobRequest{Pattern: "*.txt", Cwd: d})
	if len(res.Files) != sandbox.MaxGlobResults || !res.Truncated {
		t.Errorf("glob of 1005 files gave %d files, truncated %v; want %d, true", len(res.Files), res.Truncated, sandbox.MaxGlobResults)
	}
}

func (s *suite) testGrep(t *testing.T) {
	d := s.dir(t)
	s.write(t, d+"/a.go", "package a\n\nfunc Alpha() {}\nvar x = 1\nfunc Beta() {}\n")
	s.write(t, d+"/sub/b.go", "package sub\nfunc Gamma() {}\n")
	s.write(t, d+"/c.txt", "func Delta() {}\n")
	s.write(t, d+"/node_modules/m.go", "func Hidden() {}\n")
	s.sh(t, "cd "+quote(d)+` && printf 'func Bin() {}\000' > bin.go`)

	res, err := s.sb.Grep(opCtx(t), sandbox.GrepRequest{Pattern: `func [A-Z]\w*`, Cwd: d, Include: "*.go", ContextLines: 1})
	noErr(t, "grep", err)
	var got []string
	for _, m := range res.Matches {
		got = append(got, fmt.Sprintf("%s:%d:%s", m.Path, m.Line, m.Text))
	}
	wantFiles(t, "grep matches", got, d+"/a.go:3:func Alpha() {}", d+"/a.go:5:func Beta() {}", d+"/sub/b.go:2:func Gamma() {}")
	if len(res.Matches) == 3 {
		m := res.Matches[0]
		if !slices.Equal(m.Before, []string{""}) || !slices.Equal(m.After, []string{"var x = 1"}) {
			t.Errorf("context of first match: before %q after %q", m.Before, m.After)
		}
		if m := res.Matches[1]; !slices.Equal(m.Before, []string{"var x = 1"}) || len(m.After) != 0 {
			t.Errorf("context of last line: before %q after %q", m.Before, m.After)
		}
	}
	res, err = s.sb.Grep(opCtx(t), sandbox.GrepRequest{Pattern: `func`, Cwd: d, MaxResults: 2})
	noErr(t, "grep max_results 2", err)
	if len(res.Matches) != 2 || !res.Truncated {
		t.Errorf("grep max_results 2 gave %d matches, truncated %v", len(res.Matches), res.Truncated)
	}
	res, err = s.sb.Grep(opCtx(t), sandbox.GrepRequest{Pattern: `Delta`, Cwd: d, Include: "**/*.txt"})
	noErr(t, "grep include with slash", err)
	if len(res.Matches) != 1 || res.Matches[0].Path != d+"/c.txt" {
		t.Errorf("grep Delta in **/*.txt = %+v", res.Matches)
	}
	res, err = s.sb.Grep(opCtx(t), sandbox.GrepRequest{Pattern: `Hidden`, Cwd: d})
	noErr(t, "grep node_modules", err)
	if len(res.Matches) != 0 {
		t.Errorf("grep searched node_modules: %+v", res.Matches)
	}
	_, err = s.sb.Grep(opCtx(t), sandbox.GrepRequest{Pattern: `(`, Cwd: d})
	wantCode(t, "grep invalid regexp", err, sandbox.CodeBadRequest)
}

func (s *suite) exec(t *testing.T, req sandbox.ExecRequest) sandbox.ExecResult {
	t.Helper()
	res, err := s.sb.Exec(opCtx(t), req)
	noErr(t, "exec "+req.Command, err)
	return res
}

func (s *suite) testExec(t *testing.T) {
	d := s.dir(t)
	res := s.exec(t, sandbox.ExecRequest{Command: "echo out; echo err >&2; exit 3"})
	if res.ExitCode != 3 || res.Stdout != "out\n" || res.Stderr != "err\n" || res.Truncated || res.TimedOut {
		t.Errorf("exec = %+v", res)
	}
	s.sh(t, "mkdir -p "+quote(d+"/sub"))
	res = s.exec(t, sandbox.ExecRequest{Command: "pwd", Cwd: d + "/sub"})
	if want := path.Join(s.info.Workspace, d, "sub") + "\n"; res.Stdout != want {
		t.Errorf("pwd with cwd %s/sub = %q, want %q", d, res.Stdout, want)
	}
	res = s.exec(t, sandbox.ExecRequest{Command: "pwd"})
	if res.Stdout != s.info.Workspace+"\n" {
		t.Errorf("default cwd = %q, want the workspace %q", res.Stdout, s.info.Workspace)
	}
	res = s.exec(t, sandbox.ExecRequest{Command: "exit 0"})
	if res.DurationMs < 0 {
		t.Errorf("DurationMs = %d", res.DurationMs)
	}
	_, err := s.sb.Exec(opCtx(t), sandbox.ExecRequest{Command: ""})
	wantCode(t, "exec empty command", err, sandbox.CodeBadRequest)
	_, err = s.sb.Exec(opCtx(t), sandbox.ExecRequest{Command: "pwd", Cwd: d + "/missing"})
	wantCode(t, "exec in missing cwd", err, sandbox.CodeNotFound)
}

func (s *suite) testExecEnv(t *testing.T) {
	hostile := "a b $(echo pwned) `echo pwned` ; 'q' \"dq\""
	res := s.exec(t, sandbox.ExecRequest{Command: `printf '%s|%s' "$POLOS_T1" "$POLOS_T2"`,
		Env: map[string]string{"POLOS_T1": hostile, "POLOS_T2": "two"}})
	if want := hostile + "|two"; res.Stdout != want {
		t.Errorf("env passed as %q, want %q", res.Stdout, want)
	}
	_, err := s.sb.Exec(opCtx(t), sandbox.ExecRequest{Command: "true", Env: map[string]string{"A=B": "x"}})
	wantCode(t, "env name with '='", err, sandbox.CodeBadRequest)
}

func (s *suite) testExecANSI(t *testing.T) {
	res := s.exec(t, sandbox.ExecRequest{Command: `printf '\033[1;31mred\033[0m \033]0;title\007plain\n'; printf '\033[32mgreen\033[0m\n' >&2`})
	if res.Stdout != "red plain\n" || res.Stderr != "green\n" {
		t.Errorf("ANSI not stripped: stdout %q, stderr %q", res.Stdout, res.Stderr)
	}
}

func (s *suite) testExecTruncation(t *testing.T) {
	res := s.exec(t, sandbox.ExecRequest{Command: `printf HEAD; head -c 150000 /dev/zero | tr '\000' x; printf TAIL`})
	if !res.Truncated {
		t.Errorf("150,000 characters of output not marked truncated")
	}
	n := len([]rune(res.Stdout))
	if n > sandbox.MaxExecOutputChars || n < sandbox.MaxExecOutputChars*9/10 {
		t.Errorf("truncated output has %d characters, want about %d", n, sandbox.MaxExecOutputChars)
	}
	if !strings.HasPrefix(res.Stdout, "HEAD") || !strings.HasSuffix(res.Stdout, "TAIL") || !strings.Contains(res.Stdout, "truncated") {
		t.Errorf("truncated output lacks head, tail or marker: %q...%q", res.Stdout[:40], res.Stdout[len(res.Stdout)-40:])
	}
	// The head keeps about 20% of the budget, the tail about 80%.
	marker := strings.Index(res.Stdout, "\n\n...")
	if marker < sandbox.MaxExecOutputChars*15/100 || marker > sandbox.MaxExecOutputChars*25/100 {
		t.Errorf("marker at %d, want about 20%% of %d", marker, sandbox.MaxExecOutputChars)
	}
	res = s.exec(t, sandbox.ExecRequest{Command: `head -c 150000 /dev/zero | tr '\000' y >&2`})
	if !res.Truncated || len(res.Stderr) > sandbox.MaxExecOutputChars {
		t.Errorf("long stderr: truncated %v, %d bytes", res.Truncated, len(res.Stderr))
	}
}

func (s *suite) testExecTimeout(t *testing.T) {
	d := s.dir(t)
	pidFile := quote(d + "/bg.pid")
	start := time.Now()
	res := s.exec(t, sandbox.ExecRequest{Command: "sleep 1000 & echo $! > " + pidFile + "; sleep 1000", TimeoutSec: 1})
	if !res.TimedOut || res.ExitCode != -1 {
		t.Fatalf("exec past its timeout = %+v, want timed_out and exit_code -1", res)
	}
	if el := time.Since(start); el > 30*time.Second {
		t.Errorf("exec with a 1 s timeout took %v", el)
	}
	pid := strings.TrimSpace(s.read(t, d+"/bg.pid"))
	if pid == "" {
		t.Fatal("background child's pid was not recorded")
	}
	checkFor(t, "background child "+pid+" killed", func() bool {
		r, err := s.sb.Exec(opCtx(t), sandbox.ExecRequest{Command: "kill -0 " + pid + " 2>/dev/null || echo gone", TimeoutSec: 30})
		return err == nil && r.Stdout == "gone\n"
	})
}

func (s *suite) testExecBackground(t *testing.T) {
	d := s.dir(t)
	pidFile := quote(d + "/bg.pid")
	start := time.Now()
	res := s.exec(t, sandbox.ExecRequest{Command: "sleep 60 & echo $! > " + pidFile + "; echo started", TimeoutSec: 120})
	el := time.Since(start)
	if res.ExitCode != 0 || res.TimedOut || res.Stdout != "started\n" {
		t.Errorf("exec leaving a background child = %+v", res)
	}
	if el > 30*time.Second {
		t.Errorf("exec leaving a background child holding stdout took %v; it must return when the shell exits", el)
	}
	pid := strings.TrimSpace(s.read(t, d+"/bg.pid"))
	s.exec(t, sandbox.ExecRequest{Command: "kill " + pid})
}

// escapes checks that every tool refuses path p with CodeOutsideWorkspace.
func (s *suite) escapes(t *testing.T, p string) {
	t.Helper()
	ctx := opCtx(t)
	_, err := s.sb.Read(ctx, sandbox.ReadRequest{Path: p})
	wantCode(t, "read "+p, err, sandbox.CodeOutsideWorkspace)
	_, err = s.sb.Write(ctx, sandbox.WriteRequest{Path: p, Content: "pwned\n"})
	wantCode(t, "write "+p, err, sandbox.CodeOutsideWorkspace)
	_, err = s.sb.Write(ctx, sandbox.WriteRequest{Path: p + "/new/file", Content: "pwned\n"})
	wantCode(t, "write "+p+"/new/file", err, sandbox.CodeOutsideWorkspace)
	_, err = s.sb.Edit(ctx, sandbox.EditRequest{Path: p, OldText: "secret", NewText: "pwned"})
	wantCode(t, "edit "+p, err, sandbox.CodeOutsideWorkspace)
}

// escapesAsDir checks that the tools taking a directory refuse p.
func (s *suite) escapesAsDir(t *testing.T, p string) {
	t.Helper()
	ctx := opCtx(t)
	_, err := s.sb.Glob(ctx, sandbox.GlobRequest{Pattern: "*", Cwd: p})
	wantCode(t, "glob in "+p, err, sandbox.CodeOutsideWorkspace)
	_, err = s.sb.Grep(ctx, sandbox.GrepRequest{Pattern: "secret", Cwd: p})
	wantCode(t, "grep in "+p, err, sandbox.CodeOutsideWorkspace)
	_, err = s.sb.Exec(ctx, sandbox.ExecRequest{Command: "pwd", Cwd: p})
	wantCode(t, "exec in "+p, err, sandbox.CodeOutsideWorkspace)
}

func (s *suite) testEscapeDotDot(t *testing.T) {
	d := s.dir(t)
	for _, p := range []string{"../escape.txt", d + "/../../escape.txt", "a/../../escape.txt", ".."} {
		s.escapes(t, p)
	}
	s.escapesAsDir(t, "..")
	s.escapesAsDir(t, d+"/../..")
	res := s.exec(t, sandbox.ExecRequest{Command: "test -e ../escape.txt && echo leaked || echo ok"})
	if res.Stdout != "ok\n" {
		t.Errorf("a refused write still created ../escape.txt")
	}
}

func (s *suite) testEscapeAbsolute(t *testing.T) {
	out := s.outsideDir(t)
	s.escapes(t, out+"/target")
	s.escapes(t, "/etc/passwd")
	s.escapesAsDir(t, out)
	s.escapesAsDir(t, "/")
	_, err := s.sb.Glob(opCtx(t), sandbox.GlobRequest{Pattern: out + "/*"})
	wantCode(t, "glob with an absolute pattern outside", err, sandbox.CodeOutsideWorkspace)
	if got := s.sh(t, "cat "+quote(out+"/target")); got != "secret\n" {
		t.Errorf("file outside the workspace changed to %q", got)
	}
}

func (s *suite) testEscapeSymlinkLeaf(t *testing.T) {
	d := s.dir(t)
	out := s.outsideDir(t)
	s.sh(t, "cd "+quote(d)+" && ln -s "+quote(out+"/target")+" leaf && ln -s "+quote(out+"/absent")+" dangling")
	s.escapes(t, d+"/leaf")
	_, err := s.sb.Write(opCtx(t), sandbox.WriteRequest{Path: d + "/dangling", Content: "pwned\n"})
	wantCode(t, "write through a dangling symlink", err, sandbox.CodeOutsideWorkspace)
	if got := s.sh(t, "cat "+quote(out+"/target")+"; test -e "+quote(out+"/absent")+" && echo created || true"); got != "secret\n" {
		t.Errorf("outside files after writes through symlinks: %q", got)
	}
	res, err := s.sb.Grep(opCtx(t), sandbox.GrepRequest{Pattern: "secret", Cwd: d})
	noErr(t, "grep over a symlink leaving the workspace", err)
	if len(res.Matches) != 0 {
		t.Errorf("grep read through a symlink leaving the workspace: %+v", res.Matches)
	}
}

func (s *suite) testEscapeSymlinkParent(t *testing.T) {
	d := s.dir(t)
	out := s.outsideDir(t)
	s.sh(t, "cd "+quote(d)+" && ln -s "+quote(out)+" linkdir && mkdir real && ln -s ../linkdir real/nested")
	s.escapes(t, d+"/linkdir/target")
	s.escapes(t, d+"/real/nested/target")
	s.escapesAsDir(t, d+"/linkdir")
	s.escapesAsDir(t, d+"/real/nested")
	if got := s.sh(t, "ls "+quote(out)); got != "target\n" {
		t.Errorf("outside directory now holds %q", got)
	}
	res := s.glob(t, sandbox.GlobRequest{Pattern: "**", Cwd: d})
	for _, f := range res.Files {
		if strings.Contains(f, "target") {
			t.Errorf("glob followed a symlinked directory out of the workspace: %q", res.Files)
		}
	}
	g, err := s.sb.Grep(opCtx(t), sandbox.GrepRequest{Pattern: "secret", Cwd: d})
	noErr(t, "grep over a symlinked directory", err)
	if len(g.Matches) != 0 {
		t.Errorf("grep followed a symlinked directory out of the workspace: %+v", g.Matches)
	}
}

// hostileNames are file names a shell would interpret.
var hostileNames = []string{
	"with space.txt",
	`quote'single.txt`,
	`quote"double.txt`,
	"$(touch pwned).txt",
	"semi;touch pwned;.txt",
	"back`touch pwned`tick.txt",
	"-leading-dash.txt",
	"--help",
	"pipe|touch pwned",
	"amp&&touch pwned",
	"new\nline.txt",
}

func (s *suite) testHostileNames(t *testing.T) {
	d := s.dir(t)
	for _, name := range hostileNames {
		sub := d + "/" + name + "dir"
		p := sub + "/" + name
		s.write(t, p, "hello\n")
		if got := s.read(t, p); got != "hello\n" {
			t.Errorf("read %q = %q", p, got)
		}
		_, err := s.sb.Edit(opCtx(t), sandbox.EditRequest{Path: p, OldText: "hello", NewText: "bye"})
		noErr(t, "edit "+p, err)
		g := s.glob(t, sandbox.GlobRequest{Pattern: "*", Cwd: sub})
		wantFiles(t, "glob in "+sub, g.Files, p)
		gr, err := s.sb.Grep(opCtx(t), sandbox.GrepRequest{Pattern: "bye", Cwd: sub})
		noErr(t, "grep in "+sub, err)
		if len(gr.Matches) != 1 || gr.Matches[0].Path != p {
			t.Errorf("grep in %q = %+v", sub, gr.Matches)
		}
		res := s.exec(t, sandbox.ExecRequest{Command: "cat ./*", Cwd: sub})
		if res.Stdout != "bye\n" {
			t.Errorf("exec in cwd %q: %+v", sub, res)
		}
	}
	g := s.glob(t, sandbox.GlobRequest{Pattern: "**/pwned*"})
	if len(g.Files) != 0 {
		t.Errorf("a hostile name was interpreted by a shell: %q", g.Files)
	}
	if out := s.sh(t, "ls -a | grep -c pwned || true"); strings.TrimSpace(out) != "0" {
		t.Errorf("a hostile name was interpreted by a shell in the workspace root")
	}
}
