package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/agent"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/llmfake"
	_ "github.com/polos-run/polos/llm/providers"
	"github.com/polos-run/polos/llm/scripted"
	"github.com/polos-run/polos/policy"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/dispatch"
	"github.com/polos-run/polos/sandbox/local"
)

const helloScript = `
- tool_calls:
    - {name: write, input: {path: hello.js, content: "console.log('Hello, world!')"}}
- tool_calls:
    - {name: exec, input: {command: node hello.js}}
- text: Done. It printed Hello, world!
`

type env struct {
	t    *testing.T
	srv  *testutil.Server
	cl   *client.Client
	reg  *polos.Registry
	deps agent.Deps
	ws   string
	stop []func()
}

func newEnv(t *testing.T) *env { return newEnvWith(t, local.New()) }

func newEnvWith(t *testing.T, lp *local.Provider) *env {
	e := &env{t: t, srv: testutil.StartServer(t), reg: polos.NewRegistry(), ws: t.TempDir()}
	key, err := dispatch.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	host, err := dispatch.NewHost(e.srv.NC, dispatch.HostOptions{Namespace: "default", Key: key,
		Policy: dispatch.Policy{WorkspaceRoots: []string{e.ws}}}, lp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	e.cl, _ = client.New(e.srv.NC, "default")
	grants, err := hitl.NewGrants(context.Background(), e.srv.JS, "default")
	if err != nil {
		t.Fatal(err)
	}
	e.deps = agent.Deps{
		Sandboxes: func(env string) (sandbox.Provider, error) { return dispatch.NewClient(e.srv.NC, "default", env) },
		Grants:    grants,
	}
	return e
}

func (e *env) startExecutor() {
	ex, err := executor.New(e.srv.NC, e.srv.JS, e.reg, executor.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = ex.Run(ctx) }()
	stop := func() { cancel(); wg.Wait() }
	e.stop = append(e.stop, stop)
	e.t.Cleanup(stop)
}

func (e *env) stopExecutors() {
	for _, s := range e.stop {
		s()
	}
	e.stop = nil
}

func (e *env) localAgent(id string, provider llm.ProviderConfig) agent.Config {
	return agent.Config{ID: id, Provider: provider, SystemPrompt: "You are a coding agent.",
		Sandbox: agent.SandboxConfig{Env: "local", Spec: sandbox.Spec{WorkspaceDir: e.ws}}}
}

func (e *env) waitFor(id, key string) events.Summary {
	e.t.Helper()
	var s events.Summary
	testutil.CheckFor(e.t, 30*time.Second, 20*time.Millisecond, func() error {
		var err error
		s, err = e.cl.Status(context.Background(), id)
		if err != nil {
			return err
		}
		for _, w := range s.Waiting {
			if w.StepKey == key {
				return nil
			}
		}
		if s.Status != events.StatusRunning && s.Status != events.StatusWaiting {
			return fmt.Errorf("run ended %s: %+v", s.Status, s.Error)
		}
		return fmt.Errorf("not waiting on %s yet (status %s, waiting %+v)", key, s.Status, s.Waiting)
	})
	return s
}

func (e *env) decide(id, key, data string) {
	e.t.Helper()
	if _, err := e.cl.Resume(context.Background(), id, key, client.Decision{Data: json.RawMessage(data), DecidedBy: "test", Validate: hitl.Validate}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) result(id string) events.Summary {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := e.cl.Result(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func execOutputs(hist []events.Event) []string {
	var out []string
	for _, ev := range hist {
		if ev.Type == events.StepCompleted && ev.Name == "tool:exec" {
			var o agent.ToolOutcome
			_ = json.Unmarshal(ev.Data, &o)
			out = append(out, string(o.Output))
		}
	}
	return out
}

// The seed scenario: a local coding agent; every write and exec asks first.
func TestSeedScenarioWriteAndExecApprovals(t *testing.T) {
	e := newEnv(t)
	script := filepath.Join(t.TempDir(), "demo.yaml")
	os.WriteFile(script, []byte(helloScript), 0o644)
	if err := agent.Register(e.reg, e.localAgent("local_coding_agent", llm.ProviderConfig{Provider: "scripted", Script: script}), e.deps); err != nil {
		t.Fatal(err)
	}
	e.startExecutor()
	id, _, err := e.cl.Start(context.Background(), "local_coding_agent", "Create hello.js that prints 'Hello, world!' and run it.", client.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := e.waitFor(id, "approve-1-0")
	if !strings.Contains(string(s.Waiting[0].Form), `"path_approval"`) {
		t.Fatalf("write approval form: %s", s.Waiting[0].Form)
	}
	// The string "true" is not an approval.
	if _, err := e.cl.Resume(context.Background(), id, "approve-1-0", client.Decision{Data: json.RawMessage(`{"approved":"true"}`), Validate: hitl.Validate}); err == nil {
		t.Fatal(`"true" as a string was accepted`)
	}
	e.decide(id, "approve-1-0", `{"approved":true}`)
	s = e.waitFor(id, "approve-2-0")
	if !strings.Contains(string(s.Waiting[0].Form), "node hello.js") {
		t.Fatalf("exec approval form: %s", s.Waiting[0].Form)
	}
	e.decide(id, "approve-2-0", `{"approved":true}`)
	s = e.resultOrDump(id)
	if s.Status != events.StatusCompleted || !strings.Contains(string(s.Result), "Hello, world!") {
		t.Fatalf("result: %s %s", s.Status, s.Result)
	}
	outs := execOutputs(e.history(id))
	if len(outs) != 1 || !strings.Contains(outs[0], `Hello, world!\n`) {
		t.Fatalf("exec outputs: %v", outs)
	}
	if b, _ := os.ReadFile(filepath.Join(e.ws, "hello.js")); string(b) != "console.log('Hello, world!')" {
		t.Fatalf("hello.js: %q", b)
	}
}

func (e *env) resultOrDump(id string) events.Summary {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := e.cl.Result(ctx, id)
	if err != nil {
		for _, ev := range e.history(id) {
			b, _ := json.Marshal(ev)
			e.t.Log(string(b))
		}
		e.t.Fatal(err)
	}
	return s
}

func (e *env) history(id string) []events.Event {
	h, err := e.cl.History(context.Background(), id, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// Through the real Anthropic SDK against the fake: a rejected exec's
// feedback reaches the next LLM request, allow_always lets the same command
// run without asking, and a resumed run (fresh executor, no cache) makes no
// new request for turns already completed.
func TestRejectionFeedbackAllowAlwaysAndNoRepeatedLLMCalls(t *testing.T) {
	e := newEnv(t)
	fake := llmfake.NewAnthropic(scripted.MustParse("fake.yaml", `
- tool_calls:
    - {name: exec, input: {command: "npm install chalk"}}
- tool_calls:
    - {name: exec, input: {command: "echo hi"}}
- tool_calls:
    - {name: exec, input: {command: "echo hi"}}
- text: adapted
`))
	t.Cleanup(fake.Close)
	cfg := e.localAgent("coder", llm.ProviderConfig{Provider: "anthropic", Model: "claude-sonnet-4-5", BaseURL: fake.URL, APIKey: "test-key"})
	if err := agent.Register(e.reg, cfg, e.deps); err != nil {
		t.Fatal(err)
	}
	e.startExecutor()
	id, _, _ := e.cl.Start(context.Background(), "coder", "install chalk", client.StartOptions{Session: "s1"})
	e.waitFor(id, "approve-1-0")
	// Crash-equivalent: all executors gone while the run waits after its
	// first LLM call; a fresh executor (empty cache) continues it.
	e.stopExecutors()
	if n := fake.RequestCount(); n != 1 {
		t.Fatalf("requests before resume: %d", n)
	}
	e.decide(id, "approve-1-0", `{"approved":false,"feedback":"do not install packages; use echo"}`)
	e.startExecutor()
	e.waitFor(id, "approve-2-0")
	reqs := fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("requests after resume: %d, want 2 (no repeated turn)", len(reqs))
	}
	body := string(reqs[1].Body)
	if !strings.Contains(body, `Command rejected by user: npm install chalk\\nUser feedback: do not install packages; use echo`) {
		t.Fatalf("feedback missing from the next request: %s", body)
	}
	e.decide(id, "approve-2-0", `{"approved":true,"allow_always":true}`)
	s := e.result(id) // the third turn's identical command runs without asking
	if string(s.Result) == "" || !strings.Contains(string(s.Result), "adapted") {
		t.Fatalf("result %s (%s)", s.Result, s.Status)
	}
	hist := e.history(id)
	if n := count(hist, events.Suspended); n != 2 {
		t.Fatalf("%d approvals asked, want 2 (allow_always skips the third)", n)
	}
	if fake.RequestCount() != 4 {
		t.Fatalf("LLM requests %d, want 4", fake.RequestCount())
	}
	outs := execOutputs(hist)
	if len(outs) != 2 || !strings.Contains(outs[1], "hi") {
		t.Fatalf("exec outputs %v", outs)
	}
	// What the agent was told is in the history: the rejection with its
	// feedback as text, the executed commands by their recorded steps.
	told := toolResults(hist)
	if len(told) != 3 || !strings.Contains(told[0]["content"], "User feedback: do not install packages; use echo") ||
		told[1]["step"] != "tool:exec" || told[2]["step"] != "tool:exec" || told[1]["content"] != "" {
		t.Fatalf("tool_result annotations %v", told)
	}
	// A new run in the same session: the grant applies there too.
	id2, _, _ := e.cl.Start(context.Background(), "coder", "again", client.StartOptions{Session: "s1"})
	_ = id2
}

func count(h []events.Event, t events.Type) int {
	n := 0
	for _, e := range h {
		if e.Type == t {
			n++
		}
	}
	return n
}

func TestUnknownToolAndMalformedArgumentsGiveErrorResults(t *testing.T) {
	e := newEnv(t)
	fake := llmfake.NewAnthropic(scripted.MustParse("bad.yaml", `
- tool_calls:
    - {name: rm_rf, input: {}}
    - {name: read, input: {nope: 1}}
- text: ok
`))
	t.Cleanup(fake.Close)
	cfg := e.localAgent("bad", llm.ProviderConfig{Provider: "anthropic", Model: "m", BaseURL: fake.URL, APIKey: "k"})
	agent.Register(e.reg, cfg, e.deps)
	e.startExecutor()
	id, _, _ := e.cl.Start(context.Background(), "bad", "go", client.StartOptions{})
	if s := e.result(id); s.Status != events.StatusCompleted {
		t.Fatalf("status %s %+v", s.Status, s.Error)
	}
	body := string(fake.Requests()[1].Body)
	if !strings.Contains(body, `unknown tool \"rm_rf\"`) || !strings.Contains(body, `invalid arguments for read`) {
		t.Fatalf("error results missing: %s", body)
	}
	told := toolResults(e.history(id))
	if len(told) != 2 || !strings.Contains(told[0]["content"], `unknown tool "rm_rf"`) || told[0]["is_error"] != "true" ||
		!strings.Contains(told[1]["content"], "invalid arguments for read") || told[1]["tool"] != "read" {
		t.Fatalf("tool_result annotations %v", told)
	}
}

// toolResults are the attributes of the history's tool_result annotations.
func toolResults(h []events.Event) []map[string]string {
	var out []map[string]string
	for _, e := range h {
		if e.Type == events.Annotation && e.Name == agent.AnnotationToolResult {
			out = append(out, e.Attrs)
		}
	}
	return out
}

func TestPolicyDenyAndAllowlist(t *testing.T) {
	e := newEnv(t)
	fake := llmfake.NewAnthropic(scripted.MustParse("p.yaml", `
- tool_calls:
    - {name: exec, input: {command: "ls; rm -rf /"}}
    - {name: exec, input: {command: "echo allowed"}}
    - {name: exec, input: {command: "sudo reboot"}}
- text: done
`))
	t.Cleanup(fake.Close)
	cfg := e.localAgent("pol", llm.ProviderConfig{Provider: "anthropic", Model: "m", BaseURL: fake.URL, APIKey: "k"})
	cfg.Policy.Commands.Deny = []string{"sudo *", "rm -rf *"}
	cfg.Policy.Commands.Allow = []string{"echo *", "ls"}
	agent.Register(e.reg, cfg, e.deps)
	e.startExecutor()
	id, _, _ := e.cl.Start(context.Background(), "pol", "go", client.StartOptions{})
	s := e.result(id)
	if s.Status != events.StatusCompleted {
		t.Fatalf("status %s", s.Status)
	}
	body := string(fake.Requests()[1].Body)
	if strings.Count(body, "denied by policy") != 2 || !strings.Contains(body, `allowed\\n`) {
		t.Fatalf("tool results: %s", body)
	}
	if count(e.history(id), events.Suspended) != 0 {
		t.Fatal("nothing here should ask")
	}
}

// TestExecNetworkFollowsPolicy: a local exec gets the network only when the
// policy's network capability allows it, or asks and a person approved a
// command that reaches the network; a "network" field the model sends is
// ignored.
func TestExecNetworkFollowsPolicy(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "REACHED") }))
	t.Cleanup(srv.Close)
	curl := "curl -s " + srv.URL + "/ || echo REFUSED"
	hostPort := strings.TrimPrefix(srv.URL, "http://")
	perl := `perl -e 'use IO::Socket::INET; print IO::Socket::INET->new("` + hostPort + `") ? "REACHED" : "REFUSED"'`
	cases := []struct {
		name    string
		network policy.Decision // "" = no capabilities.network rule
		input   map[string]any
		approve bool
		want    string
	}{
		{"no network rule", "", map[string]any{"command": curl}, false, "REFUSED"},
		{"no network rule, the model asks for it", "", map[string]any{"command": curl, "network": true}, false, "REFUSED"},
		{"network allowed", policy.DecisionAllow, map[string]any{"command": curl}, false, "REACHED"},
		{"network asks, approved", policy.DecisionAsk, map[string]any{"command": curl}, true, "REACHED"},
		// Approving a command the policy does not see reaching the network
		// does not open it.
		{"network asks, unflagged command approved", policy.DecisionAsk, map[string]any{"command": perl}, true, "REFUSED"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			script := filepath.Join(t.TempDir(), "s.yaml")
			input, _ := json.Marshal(tc.input)
			os.WriteFile(script, []byte("- tool_calls:\n    - {name: exec, input: "+string(input)+"}\n- text: done\n"), 0o644)
			id := fmt.Sprintf("net_%d", i)
			cfg := e.localAgent(id, llm.ProviderConfig{Provider: "scripted", Script: script})
			cfg.Policy = policy.Config{Default: policy.DecisionAllow}
			if tc.network != "" {
				cfg.Policy.Capabilities = map[string]policy.Decision{policy.CapabilityNetwork: tc.network}
			}
			if err := agent.Register(e.reg, cfg, e.deps); err != nil {
				t.Fatal(err)
			}
			e.startExecutor()
			run, _, err := e.cl.Start(context.Background(), id, "reach the server", client.StartOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.approve {
				e.waitFor(run, "approve-1-0")
				e.decide(run, "approve-1-0", `{"approved":true}`)
			}
			e.resultOrDump(run)
			outs := execOutputs(e.history(run))
			if len(outs) != 1 || !strings.Contains(outs[0], tc.want) {
				t.Fatalf("exec outputs %v, want %s", outs, tc.want)
			}
		})
	}
}

// TestUnconfinedSandboxInStatus: a run whose local sandbox runs exec
// unconfined says so in its summary (polos status shows it); a confined
// one does not.
func TestUnconfinedSandboxInStatus(t *testing.T) {
	for _, mode := range []string{local.ConfinementNone, local.ConfinementRequired} {
		t.Run(mode, func(t *testing.T) {
			e := newEnvWith(t, local.NewWithOptions(local.Options{Confinement: mode}))
			script := filepath.Join(t.TempDir(), "s.yaml")
			os.WriteFile(script, []byte("- tool_calls:\n    - {name: exec, input: {command: \"echo hi\"}}\n- text: done\n"), 0o644)
			cfg := e.localAgent("a", llm.ProviderConfig{Provider: "scripted", Script: script})
			cfg.Policy = policy.Config{Default: policy.DecisionAllow}
			if err := agent.Register(e.reg, cfg, e.deps); err != nil {
				t.Fatal(err)
			}
			e.startExecutor()
			id, _, err := e.cl.Start(context.Background(), "a", "go", client.StartOptions{})
			if err != nil {
				t.Fatal(err)
			}
			s := e.resultOrDump(id)
			if want := mode == local.ConfinementNone; s.ExecUnconfined != want {
				t.Errorf("summary exec_unconfined = %v, want %v", s.ExecUnconfined, want)
			}
		})
	}
}

// TestExecEnvIsChecked: the exec request's env reaches the policy, and a
// grant of the command does not lift an ask its env caused.
func TestExecEnvIsChecked(t *testing.T) {
	e := newEnv(t)
	fake := llmfake.NewAnthropic(scripted.MustParse("env.yaml", `
- tool_calls:
    - {name: exec, input: {command: "echo hi", env: {NODE_OPTIONS: "--require=./x.js"}}}
- tool_calls:
    - {name: exec, input: {command: "echo hi", env: {NODE_OPTIONS: "--require=./y.js"}}}
- text: done
`))
	t.Cleanup(fake.Close)
	cfg := e.localAgent("envpol", llm.ProviderConfig{Provider: "anthropic", Model: "m", BaseURL: fake.URL, APIKey: "k"})
	cfg.Policy.Commands.Allow = []string{"echo *"}
	if err := agent.Register(e.reg, cfg, e.deps); err != nil {
		t.Fatal(err)
	}
	e.startExecutor()
	id, _, _ := e.cl.Start(context.Background(), "envpol", "go", client.StartOptions{Session: "env"})
	e.waitFor(id, "approve-1-0") // `echo *` allows echo hi, but not with NODE_OPTIONS
	e.decide(id, "approve-1-0", `{"approved":true,"allow_always":true}`)
	e.waitFor(id, "approve-2-0") // the grant names the command, not its env
	e.decide(id, "approve-2-0", `{"approved":false}`)
	if s := e.result(id); s.Status != events.StatusCompleted {
		t.Fatalf("status %s", s.Status)
	}
	if n := count(e.history(id), events.Suspended); n != 2 {
		t.Fatalf("%d approvals asked, want 2", n)
	}
}
