package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/internal/textsafe"
)

// Agent-chosen strings that try to act on the approver's terminal: hide
// part of a command, rewrite a line, set the window title, reverse text.
const (
	hostileCommand = "echo safe \u202e; rm -rf ~ #\x1b[2K\rls \u2066x\u2069\u200b"
	hostileCwd     = "/workspace/\x1b[8mhidden\x1b[0m"
	hostileTitle   = "Run \x1b]0;pwned\x07this? \u009b2J"
	hostileLabel   = "Reason\x1b[1A\x1b[2K"
	hostileOption  = "yes\u202eon"
	hostileFeed    = "ok\x1b[31m red\u2028next"
	hostileModel   = "All good.\x1b[2J\x1b[HApproved by admin\u061c"
	literalEscape  = `printf '\u{1b}'` // a literal backslash sequence, not ESC
)

// ownStyle matches the printer's own ANSI styles (the only raw escapes it
// may write).
var ownStyle = regexp.MustCompile("\x1b\\[[0-9;]*m")

// checkSafe fails when out holds an unsafe rune other than the newlines
// ending lines and (with colour) the printer's own styles.
func checkSafe(t *testing.T, what, out string) {
	t.Helper()
	for _, l := range strings.Split(ownStyle.ReplaceAllString(out, ""), "\n") {
		for _, r := range l {
			if textsafe.Unsafe(r) {
				t.Errorf("%s: raw %U reaches the terminal in line %q", what, r, l)
			}
		}
	}
}

func hostileEvents() []events.Event {
	form := hitl.ExecApproval(hostileCommand, hostileCwd, map[string]string{"X": "\x1b[5m"})
	form.Form.Title = hostileTitle
	form.Form.Description = "line one\nline two \x1b[31mred\nline three"
	form.Form.Context["script"] = literalEscape
	payload, _ := json.Marshal(form)
	llm, _ := json.Marshal(map[string]any{"response": map[string]any{"text": hostileModel,
		"tool_calls": []any{map[string]any{"name": "exec\u202e", "input": map[string]any{"command": hostileCommand}}}}})
	tool, _ := json.Marshal(map[string]any{"output": map[string]any{"exit_code": 0, "stdout": "out\x1b[2Jput\n\u202eline", "stderr": "e\rrr"}})
	decision, _ := json.Marshal(map[string]any{"approved": false, "feedback": hostileFeed})
	return []events.Event{
		{Seq: 1, Type: events.StepCompleted, Name: "llm:1", Data: llm},
		{Seq: 2, Type: events.Suspended, Key: "approve-\x1b[2Kexec", Data: payload},
		{Seq: 3, Type: events.Resumed, Key: "approve-exec", Data: decision, Attrs: map[string]string{"decided_by": "cli:\u202emallory"}},
		{Seq: 4, Type: events.StepCompleted, Name: "tool:exec", Data: tool},
		{Seq: 5, Type: events.StepFailed, Name: "tool:exec", Err: &events.ErrorInfo{Message: "boom\x1b[2J"}},
		{Seq: 6, Type: events.Annotation, Name: "note", Attrs: map[string]string{"k": "v\x1b[2J"}},
	}
}

// TestTranscriptEscapesHostileText prints a transcript full of hostile
// strings, with colour off and on: nothing unsafe reaches the terminal, and
// what was hidden is visible.
func TestTranscriptEscapesHostileText(t *testing.T) {
	for _, tc := range []struct {
		name   string
		colour bool
	}{{"plain", false}, {"colour", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			p := &printer{io: IO{Out: &out}, format: OutText, colour: tc.colour}
			for _, e := range hostileEvents() {
				p.Event(e, true)
			}
			o := out.String()
			checkSafe(t, "transcript", o)
			for _, want := range []string{
				`\u{202e}`, `\u{1b}[2K\u{d}ls`, `\u{1b}]0;pwned\u{7}this?`, `\u{9b}2J`, `\u{2066}x\u{2069}\u{200b}`,
				`\u{1b}[8mhidden`, `\u{1b}[2J\u{1b}[HApproved by admin\u{61c}`, `cli:\u{202e}mallory`,
				// one-line summaries fold whitespace (\r, U+2028) into spaces
				`ok\u{1b}[31m red next`, `boom\u{1b}[2J`, `v\u{1b}[2J`, `e rr`,
				`\\u{1b}`, // the literal backslash sequence, shown doubled
			} {
				if !strings.Contains(ownStyle.ReplaceAllString(o, ""), want) {
					t.Errorf("transcript lacks %q:\n%s", want, o)
				}
			}
			// The description keeps its lines, each escaped, aligned.
			for _, want := range []string{"        line one\n", "        line two \\u{1b}[31mred\n", "        line three\n"} {
				if !strings.Contains(ownStyle.ReplaceAllString(o, ""), want) {
					t.Errorf("description line %q missing:\n%s", want, o)
				}
			}
		})
	}
}

// TestInlinePromptEscapesFields: the inline approval prompt of `polos run`
// shows a form's own labels and options escaped.
func TestInlinePromptEscapesFields(t *testing.T) {
	var out bytes.Buffer
	ss := &session{out: &printer{io: IO{Out: &out}, format: OutText}}
	f := &hitl.Form{Title: hostileTitle, Fields: []hitl.Field{
		{Key: "reason", Type: hitl.FieldText, Label: hostileLabel, Required: true},
		{Key: "choice", Type: hitl.FieldSelect, Options: []hitl.Option{{Value: hostileOption}, {Value: "no"}}},
	}}
	data, ok := ss.prompt(f, bufio.NewReader(strings.NewReader("because\nno\n")))
	if !ok {
		t.Fatal("prompt read no answer")
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil || got["reason"] != "because" || got["choice"] != "no" {
		t.Fatalf("answers = %s (%v)", data, err)
	}
	checkSafe(t, "prompt", out.String())
	for _, want := range []string{`Reason\u{1b}[1A\u{1b}[2K (text) > `, `yes\u{202e}on|no`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("prompt lacks %q:\n%s", want, out.String())
		}
	}
}

// TestHostileApprovalThroughTheCLI runs a workflow whose approval carries
// hostile text through `polos run` (inline approval, as on a terminal) and
// `polos tail` in text and JSON: text shows it escaped; JSON carries the
// exact strings, with no raw unsafe character in its bytes.
func TestHostileApprovalThroughTheCLI(t *testing.T) {
	srv := testutil.StartServer(t)
	reg := polos.NewRegistry()
	polos.Register(reg, "hostile_approval", func(ctx polos.Context, _ string) (string, error) {
		form := hitl.ExecApproval(hostileCommand, hostileCwd, nil)
		form.Form.Title = hostileTitle
		raw, err := ctx.Suspend("approve-exec", form)
		d, err := hitl.DecisionFromResume(raw, err)
		if err != nil {
			return "", err
		}
		return d.Feedback, nil
	})
	ex, err := executor.New(srv.NC, srv.JS, reg, executor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ex.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	serveControl(t, srv)

	var out, errb lockedBuf
	s := IO{In: strings.NewReader("r\n" + hostileFeed + "\nn\n\n\n"), Out: &out, Err: &errb, InTTY: true}
	code := Main([]string{"polos", "run", "hostile_approval", "--id", "hostile-1", "--server", srv.ClientURL(), "--creds", srv.CredsFile("operator")}, s)
	if code != ExitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	checkSafe(t, "polos run", out.String())
	if !strings.Contains(out.String(), `Run \u{1b}]0;pwned\u{7}this?`) || !strings.Contains(out.String(), `echo safe \u{202e}; rm -rf ~ #\u{1b}[2K\u{d}ls`) {
		t.Errorf("polos run does not show the hostile approval escaped:\n%s", out.String())
	}

	var tail lockedBuf
	testutil.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		tail = lockedBuf{}
		if code := Main([]string{"polos", "tail", "hostile-1", "--server", srv.ClientURL(), "--creds", srv.CredsFile("operator")}, IO{Out: &tail, Err: &errb}); code != ExitOK {
			t.Fatalf("tail exit %d: %s", code, errb.String())
		}
		if !strings.Contains(tail.String(), "completed") {
			return errNotYet
		}
		return nil
	})
	checkSafe(t, "polos tail", tail.String())
	if !strings.Contains(tail.String(), `\u{202e}`) || !strings.Contains(tail.String(), `rejected: ok\u{1b}[31m red next`) {
		t.Errorf("polos tail does not show the approval and the feedback escaped:\n%s", tail.String())
	}

	var jl lockedBuf
	if code := Main([]string{"polos", "tail", "hostile-1", "-o", "jsonl", "--server", srv.ClientURL(), "--creds", srv.CredsFile("operator")}, IO{Out: &jl, Err: &errb}); code != ExitOK {
		t.Fatalf("tail -o jsonl exit %d: %s", code, errb.String())
	}
	for _, r := range jl.String() {
		if r != '\n' && textsafe.Unsafe(r) {
			t.Fatalf("tail -o jsonl writes a raw %U", r)
		}
	}
	var sawTitle, sawFeedback bool
	for _, line := range strings.Split(strings.TrimSpace(jl.String()), "\n") {
		var e events.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("tail -o jsonl line is not JSON: %v: %q", err, line)
		}
		switch e.Type {
		case events.Suspended:
			p, ok, err := hitl.ParsePayload(e.Data)
			sawTitle = ok && err == nil && p.Form.Title == hostileTitle && p.Form.Context["command"] == hostileCommand
		case events.Resumed:
			var d map[string]any
			_ = json.Unmarshal(e.Data, &d)
			sawFeedback = d["feedback"] == hostileFeed
		}
	}
	if !sawTitle || !sawFeedback {
		t.Errorf("tail -o jsonl lost the exact strings (title %v, feedback %v):\n%s", sawTitle, sawFeedback, jl.String())
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}
