package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/agent"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/llmfake"
	"github.com/polos-run/polos/llm/scripted"
)

// A custom Go tool that asks first, hooks, and a guardrail that fails the
// first answer: the retry is a NEW LLM request carrying the feedback.
func TestCustomToolHooksAndGuardrail(t *testing.T) {
	e := newEnv(t)
	fake := llmfake.NewAnthropic(scripted.MustParse("g.yaml", `
- tool_calls:
    - {name: deploy, input: {env: staging}}
- text: deployed, no summary
- text: "SUMMARY: deployed to staging"
`))
	t.Cleanup(fake.Close)
	var deployed, toolStarts, ended atomic.Int32
	cfg := e.localAgent("deployer", llm.ProviderConfig{Provider: "anthropic", Model: "m", BaseURL: fake.URL, APIKey: "k"})
	cfg.Tools = []string{}
	cfg.CustomTools = []agent.CustomTool{{
		Tool: llm.Tool{Name: "deploy", Description: "deploy", InputSchema: json.RawMessage(`{"type":"object","properties":{"env":{"type":"string"}}}`)},
		Ask:  true,
		Run: func(_ context.Context, key string, in json.RawMessage) (any, error) {
			deployed.Add(1)
			return map[string]string{"deployed": string(in), "key": key}, nil
		},
	}}
	cfg.Hooks = agent.Hooks{
		OnToolStart: func(ctx polos.Context, call llm.ToolCall) error {
			if !ctx.IsReplaying() {
				toolStarts.Add(1)
			}
			return nil
		},
		OnEnd: func(ctx polos.Context, out agent.Output) error { ended.Add(1); return nil },
	}
	cfg.Guardrails = []agent.Guardrail{func(out agent.Output) error {
		if !strings.HasPrefix(out.Text, "SUMMARY:") {
			return errors.New("start the answer with SUMMARY:")
		}
		return nil
	}}
	if err := agent.Register(e.reg, cfg, e.deps); err != nil {
		t.Fatal(err)
	}
	e.startExecutor()
	id, _, _ := e.cl.Start(context.Background(), "deployer", "deploy it", client.StartOptions{})
	s := e.waitFor(id, "approve-1-0")
	if !strings.Contains(string(s.Waiting[0].Form), "tool_approval") {
		t.Fatalf("form %s", s.Waiting[0].Form)
	}
	e.decide(id, "approve-1-0", `{"approved":true}`)
	s = e.result(id)
	if s.Status != events.StatusCompleted || !strings.Contains(string(s.Result), "SUMMARY: deployed") {
		t.Fatalf("%s %s %+v", s.Status, s.Result, s.Error)
	}
	if deployed.Load() != 1 || ended.Load() < 1 || toolStarts.Load() < 1 {
		t.Fatalf("deployed %d, ended %d, tool starts %d", deployed.Load(), ended.Load(), toolStarts.Load())
	}
	reqs := fake.Requests()
	if len(reqs) != 3 || !strings.Contains(string(reqs[2].Body), "start the answer with SUMMARY:") {
		t.Fatalf("want 3 requests, the last with the guardrail feedback; got %d", len(reqs))
	}
}

// --session continues the conversation: the second run's first request
// carries the first run's messages.
func TestSessionContinuesConversation(t *testing.T) {
	e := newEnv(t)
	e.deps.Sessions = agent.KVSessions{JS: e.srv.JS, Namespace: "default"}
	fake := llmfake.NewAnthropic(scripted.MustParse("s.yaml", `
- text: "Noted: your name is Ada."
- text: "Your name is Ada."
- text: "unused"
`))
	t.Cleanup(fake.Close)
	cfg := e.localAgent("chat", llm.ProviderConfig{Provider: "anthropic", Model: "m", BaseURL: fake.URL, APIKey: "k"})
	if err := agent.Register(e.reg, cfg, e.deps); err != nil {
		t.Fatal(err)
	}
	e.startExecutor()
	id1, _, _ := e.cl.Start(context.Background(), "chat", "My name is Ada.", client.StartOptions{Session: "sess-1"})
	e.result(id1)
	id2, _, _ := e.cl.Start(context.Background(), "chat", "What is my name?", client.StartOptions{Session: "sess-1"})
	if s := e.result(id2); !strings.Contains(string(s.Result), "Your name is Ada.") {
		t.Fatalf("second run: %s", s.Result)
	}
	body := string(fake.Requests()[1].Body)
	if !strings.Contains(body, "My name is Ada.") || !strings.Contains(body, "Noted: your name is Ada.") {
		t.Fatalf("second run did not see the first: %s", body)
	}
}
