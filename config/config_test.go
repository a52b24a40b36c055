package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polos-run/polos/perr"
)

const full = `namespace: default
server: {nats_url: "", data_dir: ./data, listen: 127.0.0.1:4222, http: 127.0.0.1:8080, executors: 4, replicas: 3}
agents:
  - id: secure_coding_agent
    provider: anthropic
    model: claude-sonnet-4-5
    base_url: http://127.0.0.1:9999/v1
    system_prompt: You are a coding agent
    sandbox:
      env: docker
      docker: {image: node:20-slim, workspace_dir: ./workspace, network: bridge, memory: 2g}
      local: {cwd: ./workspace, path_restriction: ./workspace}
      exec: {security: allowlist, allowlist: ["node *", "cat *", "echo *", "ls *", "ls"]}
      file_approval: always
    policy: {commands: {allow: [], ask: [], deny: []}, capabilities: {network: ask}, default: ask}
    tools: [exec, read, write, edit, glob, grep, ask_user]
    stop_conditions: [{max_steps: 30}]
    conversation_history: 50
    queue: {name: coding, concurrency_limit: 2}
  - id: demo
    provider: scripted
    script: scripts/demo.yaml
`

func TestParseFull(t *testing.T) {
	c, err := Parse([]byte(full), "/etc/polos/polos.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a := c.Agent("secure_coding_agent")
	if a == nil || a.Provider != "anthropic" || a.Sandbox.Docker.Image != "node:20-slim" || a.Queue.ConcurrencyLimit != 2 {
		t.Fatalf("bad agent: %+v", a)
	}
	if a.Sandbox.Docker.WorkspaceDir != "/etc/polos/workspace" || a.Sandbox.Local.PathRestriction != "/etc/polos/workspace" {
		t.Fatalf("paths not resolved: %+v %+v", a.Sandbox.Docker, a.Sandbox.Local)
	}
	if a.Sandbox.Exec.Security != "allowlist" || len(a.Sandbox.Exec.Allowlist) != 5 || a.Sandbox.FileApproval != "always" {
		t.Fatalf("exec: %+v", a.Sandbox.Exec)
	}
	if !a.HasPolicy() {
		t.Fatal("policy not kept")
	}
	var pol struct {
		Default      string            `yaml:"default"`
		Capabilities map[string]string `yaml:"capabilities"`
	}
	if err := a.Policy.Decode(&pol); err != nil || pol.Default != "ask" || pol.Capabilities["network"] != "ask" {
		t.Fatalf("policy node: %v %+v", err, pol)
	}
	if c.Agent("demo").Script != "/etc/polos/scripts/demo.yaml" || c.Server.DataDir != "/etc/polos/data" {
		t.Fatalf("script/data dir: %q %q", c.Agent("demo").Script, c.Server.DataDir)
	}
	if c.Agents[1].Line != 20 {
		t.Fatalf("line of agent 2 = %d", c.Agents[1].Line)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(""), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace != DefaultNamespace || c.Server.Listen != DefaultListen || c.Server.Executors != DefaultExecutors || c.Server.DataDir != DefaultDataDir {
		t.Fatalf("%+v", c)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct{ name, doc, want string }{
		{"unknown top", "namespaces: x\n", `p.yaml:1:1: the document: unknown field "namespaces"`},
		{"unknown nested", "agents:\n  - id: a\n    provider: openai\n    sandbox: {env: local, lokal: {}}\n", `p.yaml:4:27: agents[0].sandbox: unknown field "lokal"`},
		{"wrong type", "server:\n  executors: many\n", `p.yaml:2:14: server.executors: expected an integer, got string "many"`},
		{"list expected", "agents: {id: a}\n", `p.yaml:1:9: agents: expected a list, got a mapping`},
		{"missing id", "agents:\n  - provider: openai\n", `p.yaml:2:5: agents[0]: missing required field id`},
		{"dup id", "agents:\n  - {id: a, provider: openai}\n  - {id: a, provider: openai}\n", `p.yaml:3:10: agents[1]: duplicate agent id "a" (first defined on line 2)`},
		{"unknown provider", "agents:\n  - id: a\n    provider: gemini\n", `p.yaml:3:15: agent "a": unknown provider "gemini"`},
		{"unknown env", "agents:\n  - id: a\n    provider: openai\n    sandbox: {env: vm}\n", `p.yaml:4:20: agent "a": unknown sandbox env "vm"`},
		{"scripted without script", "agents:\n  - id: a\n    provider: scripted\n", `needs a script`},
		{"syntax", "agents: [\n", `p.yaml:1: did not find expected node content`},
		{"bad id", "agents:\n  - id: 'a b'\n    provider: openai\n", `p.yaml:2:9: agents[0]: id "a b" is not a valid name`},
		{"bad replicas", "server:\n  replicas: 7\n", `p.yaml:2:13: server.replicas is 7 (fix: use 1 (one machine) or 3 or 5 (a cluster))`},
		{"bad confinement", "server:\n  sandbox_local_confinement: off\n", `p.yaml:2:30: server.sandbox_local_confinement is "off"`},
		{"tools not list", "agents:\n  - id: a\n    provider: openai\n    tools: exec\n", `p.yaml:4:12: agents[0].tools: expected a list`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), "p.yaml")
			if err == nil {
				t.Fatal("no error")
			}
			if perr.CodeOf(err) != CodeInvalid {
				t.Fatalf("code %q: %v", perr.CodeOf(err), err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if perr.CodeOf(err) != CodeUnreadable {
		t.Fatal(err)
	}
}

func TestLoadRelative(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "polos.yaml")
	if err := os.WriteFile(p, []byte("agents:\n  - {id: a, provider: scripted, script: s.yaml}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Agents[0].Script != filepath.Join(dir, "s.yaml") || c.Path != p {
		t.Fatalf("%+v", c)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("agents:\n  - id: a\n"))
	f.Add([]byte("server: {executors: -1}\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, "f.yaml")
		if err != nil {
			if perr.CodeOf(err) != CodeInvalid {
				t.Fatalf("uncoded error %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, a := range c.Agents {
			if a.ID == "" || seen[a.ID] {
				t.Fatalf("accepted bad id %q", a.ID)
			}
			seen[a.ID] = true
		}
	})
}
