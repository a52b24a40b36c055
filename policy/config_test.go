package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polos-run/polos/perr"
)

func mustParse(t *testing.T, yaml string) *Policy {
	t.Helper()
	p, err := Parse([]byte(yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCombiningForms(t *testing.T) {
	local := Context{Env: EnvLocal, Workspace: "/nonexistent-ws"}
	docker := Context{Env: EnvDocker, Workspace: "/workspace", Network: "bridge"}
	e2b := Context{Env: EnvE2B, Workspace: "/home/user"}
	cases := []struct {
		name   string
		policy string
		ctx    Context
		cmd    string
		want   Decision
	}{
		{"empty local: approval-always", "", local, "ls", Q},
		{"empty docker: allow-always", "", docker, "rm -rf /tmp/x", A},
		{"empty e2b: allow-always", "", e2b, "ls && curl x | sh", A},
		{"open policy: hazards do not ask", "", docker, "eval $(echo ls)", A},
		{"open policy: redirections outside still ask when confined", "exec: {security: allow-always}", local, "echo x > /etc/x", Q},
		{"docker, restricted policy: redirection outside the workspace asks", "exec: {security: allowlist, allowlist: [\"echo *\"]}", docker, "echo x > /usr/lib/node_modules/x.js", Q},
		{"docker, restricted policy: redirection inside", "exec: {security: allowlist, allowlist: [\"echo *\"]}", docker, "echo x > /workspace/a.txt", A},
		{"docker, open policy: redirections are the container's business", "", docker, "echo x > /etc/x", A},
		{"allowlist in docker", "exec: {security: allowlist, allowlist: [\"ls\"]}", docker, "ls", A},
		{"allowlist in docker, other", "exec: {security: allowlist, allowlist: [\"ls\"]}", docker, "rm x", Q},
		{"allowlist implied by a list", "exec: {allowlist: [\"ls\"]}", local, "ls", A},
		{"security approval-always", "exec: {security: approval-always}", docker, "ls", Q},
		{"portable without default asks, even in docker", "commands: {deny: [\"sudo *\"]}", docker, "ls", Q},
		{"portable default allow", "commands: {deny: [\"sudo *\"]}\ndefault: allow", docker, "ls", A},
		{"portable default allow, deny wins", "commands: {deny: [\"sudo *\"]}\ndefault: allow", docker, "sudo ls", D},
		{"not open: hazards ask under default allow", "commands: {deny: [\"sudo *\"]}\ndefault: allow", docker, "eval ls", Q},
		{"stricter of default and exec.security", "default: allow\nexec: {security: approval-always}", docker, "ls", Q},
		{"stricter of default and exec.security (deny)", "default: deny\nexec: {security: allowlist, allowlist: [\"ls\"]}", local, "cat x", D},
		{"allowlist plus portable allow", "commands: {allow: [\"git diff\"]}\nexec: {security: allowlist, allowlist: [\"ls\"]}", local, "git diff && ls", A},
		{"exec.allowlist does not beat deny", "commands: {deny: [\"ls -R*\"]}\nexec: {security: allowlist, allowlist: [\"ls *\"]}", local, "ls -R /", D},
		{"network ask in docker bridge", "capabilities: {network: ask}\ndefault: allow", docker, "curl x", Q},
		{"network ask, docker without network", "capabilities: {network: ask}\ndefault: allow", Context{Env: EnvDocker}, "curl x", A},
		{"network deny beats allow rule", "commands: {allow: [\"curl *\"]}\ncapabilities: {network: deny}", local, "curl x", D},
		{"network deny through a wrapper", "default: allow\ncapabilities: {network: deny}", local, "timeout 5 wget x", D},
		{"network ask on git fetch", "default: allow\ncapabilities: {network: ask}", local, "git -C sub fetch origin", Q},
		{"network allow does not ask", "default: allow\ncapabilities: {network: allow}", local, "curl x", A},
		{"explicit allow covers a named flag", "commands: {allow: [\"node -e *\"]}", local, "node -e 'console.log(1)'", A},
		{"explicit allow covers bash -c and the code inside", "commands: {allow: [\"bash -c *\", \"ls\"]}", local, "bash -c 'ls'", A},
		{"explicit bash -c allow still checks the code", "commands: {allow: [\"bash -c *\"], deny: [\"rm *\"]}", local, "bash -c 'rm x'", D},
		{"a nameref to a loader variable", "commands: {allow: [\"declare *\", \"ls\"]}", local, "declare -n r=PATH; r=/tmp ls", Q},
		{"explicit loader variable", "commands: {allow: [\"PATH=* make *\"]}", local, "PATH=/opt/bin make all", A},
		{"a possible deny match never loosens a deny default", "default: deny\ncommands: {deny: [\"rm -rf *\"]}", local, "rm $F /", D},
		{"quotes in a pattern are removed like in a command", "commands: {allow: ['grep -r \"TODO\" *']}", local, "grep -r TODO src", A},
		{"quotes in a pattern, quoted command", "commands: {allow: ['git commit -m \"fix bug\"']}", local, "git commit -m 'fix bug'", A},
		{"an escaped deny pattern", "commands: {deny: ['\\rm -rf *']}", local, "rm -rf /", D},
		{"an allowed substitution", "commands: {allow: [\"echo *\", \"date\"]}", local, "echo \"$(date)\"", A},
		{"a substitution allowed only by default", "default: allow\ncommands: {deny: [\"sudo *\"]}", local, "echo \"$(date)\"", Q},
	}
	for _, tc := range cases {
		p := mustParse(t, tc.policy)
		if got := p.CheckCommand(tc.cmd, tc.ctx); got.Decision != tc.want {
			t.Errorf("%s: %q: got %s, want %s\n%s", tc.name, tc.cmd, got.Decision, tc.want, explain(got))
		}
	}
}

func TestWriteSettings(t *testing.T) {
	ws := t.TempDir()
	cases := []struct {
		policy string
		env    Env
		want   Decision
	}{
		{"", EnvLocal, Q},
		{"", EnvDocker, A},
		{"", EnvE2B, A},
		{"file_approval: none", EnvLocal, A},
		{"file_approval: always", EnvDocker, Q},
		{"capabilities: {fileWrite: allow}", EnvLocal, A},
		{"capabilities: {fileWrite: deny}", EnvDocker, D},
		{"capabilities: {fileWrite: ask}\nfile_approval: none", EnvDocker, Q},
		{"capabilities: {fileWrite: allow}\nfile_approval: always", EnvDocker, Q},
	}
	for _, tc := range cases {
		p := mustParse(t, tc.policy)
		ctx := Context{Env: tc.env, Workspace: ws}
		if got := p.CheckPath(OpWrite, "a.txt", ctx); got.Decision != tc.want {
			t.Errorf("%q in %s: write got %s, want %s\n%s", tc.policy, tc.env, got.Decision, tc.want, explain(got))
		}
		if got := p.CheckCapability(CapabilityFileWrite, ctx); got.Decision != tc.want {
			t.Errorf("%q in %s: fileWrite capability got %s, want %s", tc.policy, tc.env, got.Decision, tc.want)
		}
	}
}

func TestCheckCapabilityNetwork(t *testing.T) {
	ask := mustParse(t, "capabilities: {network: ask}")
	none := mustParse(t, "")
	cases := []struct {
		p    *Policy
		ctx  Context
		want Decision
	}{
		{ask, Context{Env: EnvDocker, Network: "none"}, A},
		{ask, Context{Env: EnvDocker}, A},
		{ask, Context{Env: EnvDocker, Network: "bridge"}, Q},
		{ask, Context{Env: EnvLocal}, Q},
		{none, Context{Env: EnvDocker, Network: "bridge"}, A},
	}
	for _, tc := range cases {
		if got := tc.p.CheckCapability(CapabilityNetwork, tc.ctx); got.Decision != tc.want {
			t.Errorf("%+v: got %s, want %s", tc.ctx, got.Decision, tc.want)
		}
	}
	if got := none.CheckCapability("teleport", Context{}); got.Decision != DecisionAsk {
		t.Errorf("unknown capability: got %s", got.Decision)
	}
}

func TestGrants(t *testing.T) {
	p, _ := New(seedPolicies["tanstack"])
	ctx := Context{Env: EnvLocal, Workspace: "/nonexistent-ws"}
	cases := []struct {
		grants []string
		cmd    string
		want   Decision
	}{
		{nil, "curl https://example.com", Q},
		{[]string{"curl https://example.com"}, "curl https://example.com", A}, // lifts the ask rule and the network ask
		{[]string{"curl https://example.com"}, "curl https://example.com/other", Q},
		{[]string{"curl https://example.com"}, "curl https://example.com; ls", Q},
		{[]string{"sudo ls"}, "sudo ls", D}, // never above deny
		{[]string{"sudo *"}, "sudo ls", D},
		{[]string{"node *"}, "node -e 'x'", Q}, // does not name -e
		{[]string{"node -e *"}, "node -e 'x'", A},
		{[]string{`echo "$(date)"`}, `echo "$(date)"`, A}, // a whole-command grant lifts hazards
		{[]string{`echo $(rm -rf /)`}, `echo $(rm -rf /)`, D},
		{[]string{"ls *"}, "ls -la; ls x", A},
		{[]string{"ls *"}, "ls -la; rm x", Q},
		{[]string{`git commit -m "fix bug"`}, `git commit -m "fix bug" && git commit -m 'fix bug'`, A},
	}
	for _, tc := range cases {
		c := ctx
		c.Grants = tc.grants
		if got := p.CheckCommand(tc.cmd, c); got.Decision != tc.want {
			t.Errorf("grants %q: %q: got %s, want %s\n%s", tc.grants, tc.cmd, got.Decision, tc.want, explain(got))
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		yaml string
		want []string // substrings of the error
	}{
		{"comands:\n  allow: [ls]\n", []string{"x.yaml:1:1", `unknown key "comands"`, "commands"}},
		{"commands:\n  allow: [ls]\n  permit: [x]\n", []string{"x.yaml:3:3", `unknown key "permit" under commands`}},
		{"default: maybe\n", []string{"x.yaml:1:10", `unknown decision "maybe"`}},
		{"capabilities:\n  network: perhaps\n", []string{"x.yaml:2:12", "capabilities.network", `"perhaps"`}},
		{"capabilities:\n  teleport: allow\n", []string{"x.yaml:2:13", `unknown capability "teleport"`}},
		{"commands:\n  allow:\n    - ls\n    - \"  \"\n", []string{"x.yaml:4:7", "commands.allow[1]", "empty"}},
		{"exec:\n  security: yolo\n", []string{"x.yaml:2:13", `unknown exec security "yolo"`}},
		{"exec:\n  security: approval-always\n  allowlist: [ls]\n", []string{"x.yaml:3:14", "exec.allowlist", "ignores it"}},
		{"file_approval: sometimes\n", []string{"x.yaml:1:16", "file_approval"}},
		{"paths:\n  deny: [\"[\"]\n", []string{"x.yaml:2:10", "paths.deny[0]", "not a valid path pattern"}},
		{"commands: [ls]\n", []string{"x.yaml:1:11", "commands must be a mapping"}},
		{"commands:\n  allow: ls\n", []string{"x.yaml:2:10", "commands.allow must be a list of patterns", `found "ls"`}},
		{"commands:\n  allow: [[ls]]\n", []string{"x.yaml:2:10", "commands.allow must be a list"}},
		{"default: [ask]\n", []string{"x.yaml:1:10", "default must be a single value"}},
		{"capabilities: {network: {x: 1}}\n", []string{"x.yaml:1:25", "capabilities.network must be a single value"}},
		{"commands: {allow: [ls]\n", []string{"x.yaml:", "did not find"}},
		{"- a\n- b\n", []string{"x.yaml:1:1", "the policy must be a mapping"}},
		{"default: ask\ndefault: deny\n", []string{"x.yaml:2", "already defined"}},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.yaml), "x.yaml")
		if err == nil {
			t.Errorf("%q: no error", tc.yaml)
			continue
		}
		if perr.CodeOf(err) != CodeInvalid {
			t.Errorf("%q: code %q, want %q: %v", tc.yaml, perr.CodeOf(err), CodeInvalid, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q lacks %q", tc.yaml, err, w)
			}
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte("path_restriction: ./workspace\nexec: {security: allowlist, allowlist: [\"ls\"]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Config().PathRestriction, filepath.Join(dir, "workspace"); got != want {
		t.Errorf("path_restriction resolved to %q, want %q", got, want)
	}
	if got := p.CheckPath(OpRead, filepath.Join(dir, "workspace", "a"), Context{Env: EnvLocal, Workspace: dir}); got.Decision != A {
		t.Errorf("inside path_restriction: %s", got.Decision)
	}
	if got := p.CheckPath(OpRead, filepath.Join(dir, "policy.yaml"), Context{Env: EnvLocal, Workspace: dir}); got.Decision != Q {
		t.Errorf("outside path_restriction: %s", got.Decision)
	}
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if perr.CodeOf(err) != CodeUnreadable {
		t.Errorf("missing file: %v", err)
	}
	if _, err := New(Config{Default: "sometimes"}); perr.CodeOf(err) != CodeInvalid || !strings.Contains(err.Error(), "default") {
		t.Errorf("New with a bad default: %v", err)
	}
}

func TestDigest(t *testing.T) {
	a := mustParse(t, "commands: {allow: [\"ls  *\"], deny: [\"sudo *\"]}\n")
	b := mustParse(t, "# same rules, other spelling\ncommands:\n  deny: [' sudo *']\n  allow: ['ls *']\n")
	c := mustParse(t, "commands: {allow: [\"ls *\"], deny: [\"sudo *\", \"rm *\"]}\n")
	if a.Digest() != b.Digest() {
		t.Errorf("equivalent policies differ: %s %s", a.Digest(), b.Digest())
	}
	if a.Digest() == c.Digest() {
		t.Error("different policies share a digest")
	}
	if !strings.HasPrefix(a.Digest(), "sha256:") || len(a.Digest()) != len("sha256:")+64 {
		t.Errorf("digest %q", a.Digest())
	}
	empty := mustParse(t, "")
	zero, _ := New(Config{})
	if empty.Digest() != zero.Digest() {
		t.Error("an empty file and an empty Config differ")
	}
}

func TestConcurrentAndUnknownEnv(t *testing.T) {
	p, _ := New(seedPolicies["tanstack"])
	want := p.CheckCommand("pnpm test && sudo ls", seedContext)
	done := make(chan Result)
	for i := 0; i < 8; i++ {
		go func() { done <- p.CheckCommand("pnpm test && sudo ls", seedContext) }()
	}
	for i := 0; i < 8; i++ {
		if got := <-done; got.Decision != want.Decision || len(got.Reasons) != len(want.Reasons) {
			t.Fatalf("concurrent result differs: %+v vs %+v", got, want)
		}
	}
	empty, _ := New(Config{})
	if got := empty.CheckCommand("ls", Context{Env: "vm"}); got.Decision != DecisionAsk {
		t.Errorf("an unknown env must get the local defaults, got %s", got.Decision)
	}
}
