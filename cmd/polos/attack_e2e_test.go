package main_test

// The attacker suite, from the agent's seat: scripted agents run hostile
// commands in the local sandbox of a real polosd, and a careless approver
// approves every request they make. Each attack must fail because the
// boundary holds (authenticated NATS and HTTP, confined exec), not because
// somebody said no.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"gopkg.in/yaml.v3"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/sandbox"
)

// attack is one exec an agent attempts.
type attack struct {
	name    string
	command string
	env     map[string]string
	timeout int
	// check inspects what the command saw (its exec result).
	check func(t *testing.T, r sandbox.ExecResult)
}

// turn is one scripted model turn (llm/scripted's YAML).
type turn struct {
	ToolCalls []toolCall `yaml:"tool_calls,omitempty"`
	Text      string     `yaml:"text,omitempty"`
}

type toolCall struct {
	Name  string         `yaml:"name"`
	Input map[string]any `yaml:"input"`
}

func writeScript(t *testing.T, path string, attacks []attack) {
	t.Helper()
	var turns []turn
	for _, a := range attacks {
		in := map[string]any{"command": a.command}
		if a.env != nil {
			in["env"] = a.env
		}
		if a.timeout > 0 {
			in["timeout"] = a.timeout
		}
		turns = append(turns, turn{ToolCalls: []toolCall{{Name: "exec", Input: in}}})
	}
	turns = append(turns, turn{Text: "done"})
	b, err := yaml.Marshal(turns)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func token() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// carelessRun starts agent and approves every step it waits on until the
// run ends, some of them over HTTP with a forged decided_by; it returns the
// run's history.
func carelessRun(t *testing.T, d *daemon, agent string) []events.Event {
	t.Helper()
	r := mustOK(t, polos(t, d, "run", agent, "--detach", "-o", "json", "--input", "do your worst"))
	var v struct{ ID string }
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(d.ready.HTTPKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	viaHTTP := false
	testutil.CheckFor(t, 3*waitLong, 50*time.Millisecond, func() error {
		s := status(t, d, v.ID)
		switch s.Status {
		case events.StatusCompleted, events.StatusFailed, events.StatusCancelled:
			return nil
		case events.StatusWaiting:
			for _, w := range s.Waiting {
				if viaHTTP = !viaHTTP; viaHTTP {
					body := `{"data":{"approved":true},"decided_by":"human:root"}`
					req, _ := http.NewRequest("POST", d.ready.HTTPURL+"/v1/runs/"+v.ID+"/steps/"+w.StepKey+"/resume", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
					if resp, err := http.DefaultClient.Do(req); err == nil {
						resp.Body.Close()
					}
				} else {
					polos(t, d, "resume", v.ID, w.StepKey, "--approve")
				}
			}
		}
		return fmt.Errorf("run %s is %s", v.ID, s.Status)
	})
	s := status(t, d, v.ID)
	if s.Status != events.StatusCompleted {
		t.Fatalf("attacker run %s ended %s: %+v", v.ID, s.Status, s.Error)
	}
	return history(t, d, v.ID)
}

// execResults are the exec results of a history, in order.
func execResults(t *testing.T, hist []events.Event) []sandbox.ExecResult {
	t.Helper()
	var out []sandbox.ExecResult
	for _, e := range hist {
		if e.Type == events.StepCompleted && e.Name == "tool:exec" {
			var r struct{ Output sandbox.ExecResult }
			if err := json.Unmarshal(e.Data, &r); err != nil {
				t.Fatalf("exec result %s: %v", e.Data, err)
			}
			out = append(out, r.Output)
		}
	}
	return out
}

func TestAttackerAgentCannotClimbOut(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	natsPort, httpPort := freePort(t), freePort(t)
	secret := "polos-marker-" + token()
	outside := "polos-attack-" + token()
	home, _ := os.UserHomeDir()
	ws := filepath.Join(data, "workspaces", "attacker")
	t.Cleanup(func() {
		for _, p := range []string{filepath.Join("/tmp", outside), filepath.Join(home, outside), filepath.Join(data, outside)} {
			_ = os.Remove(p)
		}
	})
	noSecret := func(t *testing.T, r sandbox.ExecResult) {
		if strings.Contains(r.Stdout+r.Stderr, secret) {
			t.Fatalf("the daemon's environment leaked into the sandbox:\n%s", r.Stdout)
		}
	}
	unreachable := func(t *testing.T, r sandbox.ExecResult) {
		if strings.Contains(r.Stdout, "CONNECTED") || strings.Contains(r.Stdout, "INFO {") || strings.Contains(r.Stdout, "HTTP/1") {
			t.Fatalf("reached a polosd port from the sandbox:\n%s%s", r.Stdout, r.Stderr)
		}
	}
	attacks := []attack{
		{name: "read the daemon's environment", command: `cat /proc/*/environ 2>/dev/null | tr '\0' '\n'; cat "/proc/$PPID/environ" 2>&1 | tr '\0' '\n'; ls /proc`, check: noSecret},
		{name: "reach NATS", command: fmt.Sprintf(`bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d && echo CONNECTED && head -c 300 <&3' 2>&1`, natsPort), check: unreachable},
		{name: "reach HTTP", command: fmt.Sprintf(`bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d && echo CONNECTED && printf "GET /v1/runs HTTP/1.0\r\n\r\n" >&3 && head -c 300 <&3' 2>&1`, httpPort), check: unreachable},
		{name: "write outside the workspace", command: fmt.Sprintf(`for f in /tmp/%[1]s %[2]s/%[1]s "$HOME/%[1]s" /etc/%[1]s; do echo pwned > "$f" && echo "WROTE $f"; done 2>&1`, outside, data),
			check: func(t *testing.T, r sandbox.ExecResult) {
				for _, p := range []string{filepath.Join("/tmp", outside), filepath.Join(home, outside), filepath.Join(data, outside), filepath.Join("/etc", outside)} {
					if _, err := os.Stat(p); err == nil {
						t.Fatalf("the sandbox wrote %s", p)
					}
				}
			}},
		{name: "read polosd's credentials", command: fmt.Sprintf(`cat %[1]s/creds/default/operator.nk %[1]s/creds/default/server.nk %[1]s/creds/http.key 2>&1`, data),
			check: func(t *testing.T, r sandbox.ExecResult) {
				key, _ := os.ReadFile(filepath.Join(data, "creds", "http.key"))
				if strings.Contains(r.Stdout, "\nSU") || (len(key) > 0 && strings.Contains(r.Stdout, strings.TrimSpace(string(key)))) {
					t.Fatalf("the sandbox read polosd's credentials:\n%s", r.Stdout)
				}
			}},
		{name: "leave a detached child after the timeout", timeout: 1,
			command: `setsid sh -c 'sleep 2; echo late > late1' & (nohup sh -c 'sleep 2; echo late > late2' >/dev/null 2>&1 &); sleep 30`,
			check: func(t *testing.T, r sandbox.ExecResult) {
				if !r.TimedOut {
					t.Fatalf("the command was not timed out: %+v", r)
				}
				time.Sleep(3 * time.Second) // longer than the children would sleep
				for _, f := range []string{"late1", "late2"} {
					if _, err := os.Stat(filepath.Join(ws, f)); err == nil {
						t.Fatalf("a detached child outlived the exec timeout and wrote %s", f)
					}
				}
			}},
	}
	netAttacks := []attack{
		{name: "talk NATS with network on", command: fmt.Sprintf(`bash -c 'trap "" PIPE; exec 3<>/dev/tcp/127.0.0.1/%d; printf "CONNECT {\"verbose\":false}\r\nPUB polos.default.sandbox.local.exec 2\r\n{}\r\nPING\r\n" >&3; timeout 3 cat <&3' 2>&1`, natsPort),
			check: func(t *testing.T, r sandbox.ExecResult) {
				if !strings.Contains(r.Stdout, "Authorization Violation") || strings.Contains(r.Stdout, "PONG") {
					t.Fatalf("NATS without credentials was not refused: %+v", r)
				}
			}},
		{name: "read runs over HTTP with network on", command: fmt.Sprintf(`bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; printf "GET /v1/runs?status=waiting HTTP/1.0\r\n\r\n" >&3; timeout 3 cat <&3' 2>&1`, httpPort),
			check: func(t *testing.T, r sandbox.ExecResult) {
				if !strings.Contains(r.Stdout, " 401 ") {
					t.Fatalf("HTTP without the key was not refused:\n%s", r.Stdout)
				}
			}},
	}
	// Under an allowlist, `node hello.js` runs without asking; the same
	// command with NODE_OPTIONS in the exec's env must ask (and, approved by
	// the careless approver, still runs confined).
	hijack := "polos-node-options-" + token()
	envAttacks := []attack{
		{name: "plain node runs without asking", command: "node -v"},
		{name: "NODE_OPTIONS through env", command: "node -v", env: map[string]string{"NODE_OPTIONS": "--require=/dev/null --title=" + hijack}},
	}
	writeScript(t, filepath.Join(dir, "allowlisted.yaml"), envAttacks)
	writeScript(t, filepath.Join(dir, "attacker.yaml"), attacks)
	writeScript(t, filepath.Join(dir, "attacker_net.yaml"), netAttacks)
	cfg := fmt.Sprintf(`agents:
  - id: attacker
    provider: scripted
    model: attacker
    script: %[1]s/attacker.yaml
    sandbox: {env: local}
    tools: [exec]
    stop_conditions: [{max_steps: 40}]
  - id: attacker_net
    provider: scripted
    model: attacker
    script: %[1]s/attacker_net.yaml
    sandbox: {env: local}
    policy: {capabilities: {network: allow}}
    tools: [exec]
    stop_conditions: [{max_steps: 40}]
  - id: allowlisted
    provider: scripted
    model: attacker
    script: %[1]s/allowlisted.yaml
    sandbox: {env: local, exec: {security: allowlist, allowlist: ["node *"]}}
    tools: [exec]
    stop_conditions: [{max_steps: 40}]
`, dir)
	cfgPath := filepath.Join(dir, "polos.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startPolosdEnv(t, data, []string{"POLOS_TEST_SECRET=" + secret, "ANTHROPIC_API_KEY=sk-" + secret},
		"--config", cfgPath, "--listen", fmt.Sprintf("127.0.0.1:%d", natsPort), "--http", fmt.Sprintf("127.0.0.1:%d", httpPort))

	for _, tc := range []struct {
		agent   string
		attacks []attack
	}{{"attacker", attacks}, {"attacker_net", netAttacks}} {
		hist := carelessRun(t, d, tc.agent)
		results := execResults(t, hist)
		if len(results) != len(tc.attacks) {
			t.Fatalf("%s: %d exec results, want %d", tc.agent, len(results), len(tc.attacks))
		}
		for i, a := range tc.attacks {
			t.Run(tc.agent+"/"+a.name, func(t *testing.T) { a.check(t, results[i]) })
		}
		for _, e := range hist {
			if e.Type == events.Resumed && !strings.HasPrefix(e.Attr("decided_by"), "operator:") && e.Attr("decided_by") != "http:operator" {
				t.Errorf("decision recorded as decided by %q: only the verified credential may be recorded", e.Attr("decided_by"))
			}
		}
	}

	t.Run("allowlisted/NODE_OPTIONS through env asks", func(t *testing.T) {
		hist := carelessRun(t, d, "allowlisted")
		var asked []string
		for _, e := range hist {
			if e.Type == events.Suspended {
				asked = append(asked, string(e.Data))
			}
		}
		if len(asked) != 1 || !strings.Contains(asked[0], "NODE_OPTIONS") {
			t.Fatalf("want exactly one approval, for the exec with NODE_OPTIONS; got %d: %v", len(asked), asked)
		}
		if n := len(execResults(t, hist)); n != 2 {
			t.Fatalf("%d execs ran, want 2", n)
		}
	})
	t.Run("outside/NATS without credentials", func(t *testing.T) {
		if nc, err := nats.Connect(d.ready.NATSURL, nats.Timeout(2*time.Second)); err == nil {
			nc.Close()
			t.Fatal("connected to polosd's NATS without credentials")
		}
	})
	t.Run("outside/HTTP without the key", func(t *testing.T) {
		for _, path := range []string{"/v1/runs", "/v1/runs?status=waiting", "/v1/workflows"} {
			resp, err := http.Get(d.ready.HTTPURL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("GET %s without the key: %d, want 401", path, resp.StatusCode)
			}
		}
		resp, err := http.Post(d.ready.HTTPURL+"/v1/runs", "application/json", bytes.NewReader([]byte(`{"workflow":"attacker"}`)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("POST /v1/runs without the key: %d", resp.StatusCode)
		}
	})
	t.Run("outside/credentials are private", func(t *testing.T) {
		for _, p := range []string{filepath.Join(data, "creds"), filepath.Join(data, "creds", "default", "operator.nk"), filepath.Join(data, "creds", "http.key")} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm()&0o077 != 0 {
				t.Fatalf("%s has mode %v: other users can read it", p, st.Mode().Perm())
			}
		}
	})
}
