package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/tracing/otlptest"
)

// The seed scenario end to end through the CLI, with the scripted model:
// write approval, kill -9 of polosd while the run waits after its first LLM
// call, exec approval, and a result containing "Hello, world!". The
// restarted polosd makes no new LLM call for the turn already answered.
func TestSeedCodingAgentThroughCLI(t *testing.T) {
	dir := t.TempDir()
	script, _ := filepath.Abs("../../examples/local-coding-agent/script.yaml")
	ws := filepath.Join(dir, "workspace")
	cfg := strings.NewReplacer("script: script.yaml", "script: "+script, "./workspace", ws).Replace(mustRead(t, "../../examples/local-coding-agent/polos.yaml"))
	cfgPath := filepath.Join(dir, "polos.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	traces := otlptest.Start(t)
	d := startPolosdEnv(t, data, otelEnv(traces), "--config", cfgPath)
	r := mustOK(t, polos(t, d, "run", "local_coding_agent", "--detach", "-o", "json", "--input", "Create hello.js that prints 'Hello, world!' and run it."))
	var v struct{ ID string }
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatal(err)
	}
	s := waitStatus(t, d, v.ID, events.StatusWaiting)
	if len(s.Waiting) != 1 || s.Waiting[0].StepKey != "approve-1-0" {
		t.Fatalf("waiting %+v", s.Waiting)
	}
	d.kill9()
	d = startPolosdEnv(t, data, otelEnv(traces), "--config", cfgPath)
	mustOK(t, polos(t, d, "resume", v.ID, "approve-1-0", "--approve"))
	testWaitStep(t, d, v.ID, "approve-2-0")
	mustOK(t, polos(t, d, "resume", v.ID, "--approve")) // the only waiting step
	res := mustOK(t, polos(t, d, "result", v.ID, "--timeout", "60s", "-o", "json"))
	if !strings.Contains(res.stdout, "Hello, world!") {
		t.Fatalf("result: %s", res.stdout)
	}
	hist := history(t, d, v.ID)
	llm, execOut := 0, ""
	for _, e := range hist {
		if e.Type == events.StepCompleted && strings.HasPrefix(e.Name, "llm:") {
			llm++
		}
		if e.Type == events.StepCompleted && e.Name == "tool:exec" {
			execOut = string(e.Data)
		}
	}
	if llm != 3 {
		t.Fatalf("%d LLM steps recorded, want 3 (none repeated after the kill)", llm)
	}
	if !strings.Contains(execOut, `Hello, world!\n`) {
		t.Fatalf("exec output: %s", execOut)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "hello.js")); !strings.Contains(string(b), "Hello, world!") {
		t.Fatalf("hello.js: %q", b)
	}
	n, dups := checkTraces(t, traces, hist, true)
	t.Logf("%d OTLP spans from the agent's history across a polosd kill -9, %d received twice", n, dups)
}

func testWaitStep(t *testing.T, d *daemon, id, key string) {
	t.Helper()
	s := waitStatus(t, d, id, events.StatusWaiting)
	for i := 0; i < 200 && (len(s.Waiting) == 0 || s.Waiting[0].StepKey != key); i++ {
		s = waitStatus(t, d, id, events.StatusWaiting)
	}
	if len(s.Waiting) == 0 || s.Waiting[0].StepKey != key {
		t.Fatalf("not waiting on %s: %+v", key, s.Waiting)
	}
}

func mustRead(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
