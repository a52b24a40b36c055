package policycmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// run calls `polos policy check ARGS...` in-process and returns stdout,
// stderr and the exit status the CLI would exit with.
func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{
		Name:           "polos",
		Writer:         &out,
		ErrWriter:      &errOut,
		Commands:       []*cli.Command{Command()},
		ExitErrHandler: func(*cli.Context, error) {}, // the test reads the code instead of exiting
	}
	err := app.Run(append([]string{"polos", "policy", "check"}, args...))
	var ec cli.ExitCoder
	switch {
	case err == nil:
		code = 0
	case errors.As(err, &ec):
		code = ec.ExitCode()
		errOut.WriteString(err.Error())
	default:
		code = 1
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), code
}

func writePolicy(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const seedAllowlist = `exec:
  security: allowlist
  allowlist: ["node *", "cat *", "echo *", "ls *", "ls"]
`

func TestCheckCommandJSON(t *testing.T) {
	pol := writePolicy(t, seedAllowlist)
	ws := t.TempDir()
	cases := []struct {
		cmd  string
		want string
	}{
		{"ls && echo done", "allow"},
		{"ls -la; rm -rf /", "ask"},
		{"ls $(rm -rf ~)", "ask"},
	}
	for _, tc := range cases {
		stdout, stderr, code := run(t, "--policy", pol, "--workspace", ws, "--command", tc.cmd, "-o", "json")
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", tc.cmd, code, stderr)
		}
		var res struct {
			Decision string `json:"decision"`
			Reasons  []struct {
				Segment, Rule, Why, Decision string
			} `json:"reasons"`
			PolicyDigest string `json:"policy_digest"`
		}
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatalf("%q: output is not one JSON object: %v\n%s", tc.cmd, err, stdout)
		}
		if res.Decision != tc.want {
			t.Errorf("%q: decision %q, want %q\n%s", tc.cmd, res.Decision, tc.want, stdout)
		}
		if len(res.Reasons) == 0 || res.Reasons[0].Why == "" || res.Reasons[0].Rule == "" {
			t.Errorf("%q: no reasons: %s", tc.cmd, stdout)
		}
		if !strings.HasPrefix(res.PolicyDigest, "sha256:") {
			t.Errorf("%q: digest %q", tc.cmd, res.PolicyDigest)
		}
	}
}

func TestCheckDenyExitsZero(t *testing.T) {
	pol := writePolicy(t, "commands: {deny: [\"sudo *\"]}\n")
	stdout, _, code := run(t, "--policy", pol, "--command", "sudo rm -rf /")
	if code != 0 {
		t.Fatalf("a deny decision must exit 0, got %d", code)
	}
	if !strings.HasPrefix(stdout, "deny: sudo rm -rf /\n") || !strings.Contains(stdout, `commands.deny[0] "sudo *"`) {
		t.Errorf("text output:\n%s", stdout)
	}
}

func TestCheckPaths(t *testing.T) {
	pol := writePolicy(t, "file_approval: none\n")
	ws := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(ws, "link")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--read", "a.txt"}, "allow"},
		{[]string{"--write", "a.txt"}, "allow"},
		{[]string{"--write", "link/a.txt"}, "deny"},
		{[]string{"--read", "../x"}, "ask"},
		{[]string{"--write", "/etc/passwd"}, "deny"},
		{[]string{"--glob", "../**"}, "ask"},
		{[]string{"--write", "/etc/passwd", "--env", "docker"}, "allow"},
	}
	for _, tc := range cases {
		args := append([]string{"--policy", pol, "--workspace", ws, "-o", "json"}, tc.args...)
		stdout, stderr, code := run(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, stderr)
		}
		if !strings.Contains(stdout, `"decision": "`+tc.want+`"`) {
			t.Errorf("%v: want %s:\n%s", tc.args, tc.want, stdout)
		}
	}
}

func TestBrokenPolicyExitsTwo(t *testing.T) {
	pol := writePolicy(t, "commands:\n  allow: [\"ls\"]\ndefault: maybe\n")
	_, stderr, code := run(t, "--policy", pol, "--command", "ls")
	if code != ExitBroken {
		t.Fatalf("exit %d, want %d", code, ExitBroken)
	}
	for _, want := range []string{pol + ":3:10", "POLICY_INVALID", `unknown decision "maybe"`} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q lacks %q", stderr, want)
		}
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	pol := writePolicy(t, seedAllowlist)
	cases := [][]string{
		{"--command", "ls"}, // no --policy
		{"--policy", pol},   // nothing to check
		{"--policy", pol, "--command", "ls", "--read", "x"},
		{"--policy", pol, "--command", "ls", "--env", "vm"},
		{"--policy", pol, "--command", "ls", "-o", "yaml"},
		{"--policy", pol, "--command", "ls", "--bogus"},
		{"--policy", filepath.Join(t.TempDir(), "missing.yaml"), "--command", "ls"},
		{"--policy", pol, "ls"},
	}
	for _, args := range cases {
		_, stderr, code := run(t, args...)
		if code != ExitBroken {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitBroken, stderr)
		}
		if !strings.Contains(stderr, "POLICY") {
			t.Errorf("%v: stderr %q has no coded error", args, stderr)
		}
	}
}
