package scripted_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/scripted"
	"github.com/polos-run/polos/perr"
)

const hello = `- tool_calls:
    - {name: write, input: {path: hello.js, content: "console.log('Hello, world!')"}}
- tool_calls:
    - {name: exec, input: {command: node hello.js}}
- text: Done. It printed Hello, world!
`

func writeScript(t *testing.T, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "script.yaml")
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func request(assistantTurns int) llm.Request {
	req := llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Text: "say hello"}}}
	for i := range assistantTurns {
		id := scripted.ToolCallID(i, 0)
		req.Messages = append(req.Messages,
			llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: id, Name: "exec", Input: json.RawMessage(`{}`)}}},
			llm.Message{Role: llm.RoleTool, ToolResults: []llm.ToolResult{{ToolCallID: id, Content: "ok"}}})
	}
	return req
}

func generate(t *testing.T, m llm.Model, req llm.Request) (llm.Response, []string) {
	t.Helper()
	var deltas []string
	resp, err := m.Generate(context.Background(), req, func(d llm.Delta) { deltas = append(deltas, d.Text) })
	if err != nil {
		t.Fatal(err)
	}
	return resp, deltas
}

func TestTurnsFollowTheScript(t *testing.T) {
	m := scripted.New(scripted.MustParse("hello.yaml", hello))
	r0, _ := generate(t, m, request(0))
	want0 := []llm.ToolCall{{ID: "call_0_0", Name: "write", Input: json.RawMessage(`{"path":"hello.js","content":"console.log('Hello, world!')"}`)}}
	if !reflect.DeepEqual(r0.ToolCalls, want0) || r0.StopReason != llm.StopToolUse || r0.Model != "m" {
		t.Fatalf("turn 0 = %+v", r0)
	}
	r1, _ := generate(t, m, request(1))
	if len(r1.ToolCalls) != 1 || r1.ToolCalls[0].ID != "call_1_0" || string(r1.ToolCalls[0].Input) != `{"command":"node hello.js"}` {
		t.Fatalf("turn 1 = %+v", r1)
	}
	r2, deltas := generate(t, m, request(2))
	if r2.Text != "Done. It printed Hello, world!" || r2.StopReason != llm.StopEndTurn || len(r2.ToolCalls) != 0 {
		t.Fatalf("turn 2 = %+v", r2)
	}
	if len(deltas) != 5 || strings.Join(deltas, "") != r2.Text {
		t.Fatalf("deltas = %q", deltas)
	}
}

// The answer is a pure function of the request: asking twice, or asking a
// fresh instance loaded from the same file (a new process after a crash),
// gives the same answer.
func TestPureFunctionOfRequest(t *testing.T) {
	path := writeScript(t, hello)
	a, err := llm.New(llm.ProviderConfig{Provider: llm.ProviderScripted, Script: path})
	if err != nil {
		t.Fatal(err)
	}
	b, err := llm.New(llm.ProviderConfig{Provider: llm.ProviderScripted, Script: path})
	if err != nil {
		t.Fatal(err)
	}
	for turn := range 4 {
		req := request(turn)
		first, _ := generate(t, a, req)
		again, _ := generate(t, a, req)
		fresh, _ := generate(t, b, req)
		if !reflect.DeepEqual(first, again) || !reflect.DeepEqual(first, fresh) {
			t.Fatalf("turn %d: %+v / %+v / %+v differ", turn, first, again, fresh)
		}
		if first.Usage.InputTokens <= 0 || first.Usage.OutputTokens <= 0 {
			t.Fatalf("turn %d: usage not estimated: %+v", turn, first.Usage)
		}
	}
	// Asking a later turn first does not change an earlier one.
	late, _ := generate(t, b, request(2))
	early, _ := generate(t, b, request(0))
	if late.Text == "" || early.ToolCalls[0].Name != "write" {
		t.Fatalf("order matters: %+v %+v", late, early)
	}
}

func TestRunsOut(t *testing.T) {
	m := scripted.New(scripted.MustParse("hello.yaml", hello))
	r, _ := generate(t, m, request(3))
	if r.StopReason != llm.StopEndTurn || len(r.ToolCalls) != 0 || !strings.Contains(r.Text, "no answer for LLM call 4 (it has 3)") || !strings.Contains(r.Text, "hello.yaml") {
		t.Fatalf("ran out = %+v", r)
	}
}

func TestStopReasonAndUsage(t *testing.T) {
	s := scripted.MustParse("s.yaml", `
- text: cut short
  stop_reason: max_tokens
  usage: {input_tokens: 1000, output_tokens: 4096, cache_read_tokens: 900}
`)
	r := s.Respond(request(0))
	if r.StopReason != llm.StopMaxTokens || r.Usage != (llm.Usage{InputTokens: 1000, OutputTokens: 4096, CacheReadTokens: 900}) {
		t.Fatalf("%+v", r)
	}
	if r.Model != "m" {
		t.Fatal(r.Model)
	}
	r = s.Respond(llm.Request{})
	if r.Model != scripted.DefaultModelName {
		t.Fatalf("default model name = %q", r.Model)
	}
}

func TestYAMLTypesBecomeJSON(t *testing.T) {
	s := scripted.MustParse("s.yaml", `
- tool_calls:
    - name: t
      input:
        date: 2001-12-14
        n: 0x1F
        f: 1.5
        b: yes
        t: true
        nothing: null
        list: [a, 2]
        nested: {z: 1, a: 2}
        big: 123456789012345678901234567890 # YAML reads it as a float
        html: "<a & b>"
`)
	got := string(s.Entries[0].ToolCalls[0].Input)
	want := `{"date":"2001-12-14","n":31,"f":1.5,"b":"yes","t":true,"nothing":null,"list":["a",2],"nested":{"z":1,"a":2},"big":1.2345678901234568e+29,"html":"<a & b>"}`
	if got != want {
		t.Fatalf("input JSON\n got %s\nwant %s", got, want)
	}
	if s.Entries[0].Line != 2 {
		t.Errorf("entry line = %d", s.Entries[0].Line)
	}
}

func TestParseErrorsCarryFileAndLine(t *testing.T) {
	cases := []struct {
		name, src, want string
	}{
		{"empty", "", "s.yaml:1: the script is empty"},
		{"not a list", "text: hi\n", "s.yaml:1:1: expected a list"},
		{"unknown key", "- text: hi\n- txet: typo\n", "s.yaml:2:3: unknown key \"txet\""},
		{"neither text nor tools", "- text: hi\n- stop_reason: end_turn\n", "s.yaml:2:3: entry 2 has neither text nor tool_calls"},
		{"bad stop reason", "- text: hi\n  stop_reason: done\n", "s.yaml:2:16: stop_reason \"done\""},
		{"tool without name", "- tool_calls:\n    - input: {a: 1}\n", "s.yaml:2:7: a tool call needs a name"},
		{"input not mapping", "- tool_calls:\n    - {name: x, input: [1]}\n", "s.yaml:2:24: input must be a mapping"},
		{"tool_calls not list", "- tool_calls: {name: x}\n", "s.yaml:1:15: tool_calls must be a list"},
		{"negative usage", "- text: hi\n  usage: {input_tokens: -1}\n", "s.yaml:2:25: usage input_tokens must be a non-negative integer"},
		{"infinite input", "- tool_calls: [{name: x, input: {a: .inf}}]\n", "s.yaml:1:37: .inf cannot be written as JSON"},
		{"duplicate key", "- text: a\n  text: b\n", "s.yaml:2:3: key \"text\" appears twice"},
		{"syntax", "- text: ok\n- text: a: b\n", "s.yaml:2: invalid YAML: mapping values are not allowed"},
		{"tab", "- text: ok\n- text: a\n\t- x\n", "s.yaml:2: invalid YAML: found a tab"},
		{"text not string", "- text: [a]\n", "s.yaml:1:9: text must be a string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := scripted.Parse("s.yaml", []byte(tc.src))
			if err == nil {
				t.Fatal("no error")
			}
			if perr.CodeOf(err) != llm.CodeBadConfig || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant code %s and %q", err, llm.CodeBadConfig, tc.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := scripted.Load(filepath.Join(t.TempDir(), "missing.yaml")); perr.CodeOf(err) != llm.CodeBadConfig {
		t.Fatalf("missing file: %v", err)
	}
	_, err := llm.New(llm.ProviderConfig{Provider: llm.ProviderScripted})
	if perr.CodeOf(err) != llm.CodeBadConfig || !strings.Contains(err.Error(), "script") {
		t.Fatalf("no script: %v", err)
	}
	bad := writeScript(t, "- nope: 1\n")
	_, err = llm.New(llm.ProviderConfig{Provider: llm.ProviderScripted, Script: bad})
	if !strings.Contains(err.Error(), bad+":1:3") {
		t.Fatalf("bad script error lacks file:line: %v", err)
	}
}

func TestAliasBombIsBounded(t *testing.T) {
	src := `
a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
`
	// Put the anchors inside a tool input so the walker expands them.
	src = "- tool_calls:\n    - name: x\n      input:\n" + indent(src, "        ") + "        g: [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
	_, err := scripted.Parse("bomb.yaml", []byte(src))
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("alias bomb: %v", err)
	}
}

func indent(s, pre string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		b.WriteString(pre + l + "\n")
	}
	return b.String()
}

func TestContextCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := scripted.New(scripted.Script{}).Generate(ctx, request(0), nil); err != context.Canceled {
		t.Fatalf("err = %v", err)
	}
}

func TestWords(t *testing.T) {
	for _, s := range []string{"", "a", "  lead", "trail  ", "Done. It printed\nHello,\tworld!", "日本 語"} {
		if got := strings.Join(scripted.Words(s), ""); got != s {
			t.Errorf("Words(%q) joins to %q", s, got)
		}
	}
	if got := scripted.Words("a b c"); len(got) != 3 {
		t.Errorf("Words(a b c) = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(hello))
	f.Add([]byte("- text: hi\n  usage: {input_tokens: 3}\n"))
	f.Add([]byte("- tool_calls: [{name: x, input: {a: &a [1], b: *a}}]\n"))
	f.Add([]byte("- {text: a, stop_reason: other}\n- text: b\n"))
	f.Add([]byte("[]"))
	f.Add([]byte("- tool_calls:\n  - name: y\n    input: {k: !!binary aGk=, t: 2001-12-14}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := scripted.Parse("fuzz.yaml", data)
		if err != nil {
			if perr.CodeOf(err) != llm.CodeBadConfig || !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("error without code or file name: %v", err)
			}
			return
		}
		for i, e := range s.Entries {
			if e.Text == "" && len(e.ToolCalls) == 0 {
				t.Fatalf("entry %d is empty", i)
			}
			for _, c := range e.ToolCalls {
				var obj map[string]any
				if json.Unmarshal(c.Input, &obj) != nil || obj == nil {
					t.Fatalf("entry %d: input %q is not a JSON object", i, c.Input)
				}
			}
			r := s.Respond(request(i))
			if r.StopReason == "" || len(r.ToolCalls) != len(e.ToolCalls) {
				t.Fatalf("entry %d answered %+v", i, r)
			}
		}
	})
}

func FuzzWords(f *testing.F) {
	f.Add("Done. It printed Hello, world!")
	f.Add(" \t\n")
	f.Fuzz(func(t *testing.T, s string) {
		if got := strings.Join(scripted.Words(s), ""); got != s {
			t.Fatalf("Words(%q) joins to %q", s, got)
		}
	})
}
