package cli

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/internal/textsafe"
)

// Truncation limits of the text transcript.
const (
	maxDataChars   = 160 // step results on one line
	maxOutputLines = 12  // tool output lines shown
	maxOutputChars = 200 // per output line
	// maxApprovalLines bounds each multi-line value of an approval box (a
	// script, a description); past it a marker says how many lines are cut.
	maxApprovalLines = 200
)

// formOf extracts the _form of a suspend payload (nil when there is none).
func formOf(payload json.RawMessage) *hitl.Form {
	p, ok, err := hitl.ParsePayload(payload)
	if !ok || err != nil {
		return nil
	}
	return &p.Form
}

// Event prints one event of a transcript in text form.
func (p *printer) Event(e events.Event, showRun bool) {
	pos := fmt.Sprintf("%5d", e.Seq)
	if e.Cursor != "" { // following every run: the position to resume from
		pos = e.Cursor
	}
	seq := p.style(styleDim, pos)
	if showRun {
		seq += " " + p.style(styleDim, e.RunID)
	}
	say := func(mark, style, format string, args ...any) {
		p.Line("%s %s %s", seq, p.style(style, mark), fmt.Sprintf(format, args...))
	}
	switch e.Type {
	case events.RunStarted:
		in := compactJSON(e.Data, maxDataChars)
		say("▶", styleBold, "%s %s %s", p.style(styleBold, "run "+e.RunID), "started: "+e.Attr("workflow"), p.style(styleDim, in))
	case events.StepStarted:
		p.Spin(stepVerb(e.Name))
	case events.StepCompleted:
		p.stepCompleted(e, say)
	case events.StepFailed:
		msg := ""
		if e.Err != nil {
			msg = e.Err.Message
		}
		final := ""
		if e.Attr("final") == "true" {
			final = " (final)"
		}
		say("✗", styleRed, "%s attempt %d failed%s: %s", e.Name, e.Attempt, final, truncate(msg, maxDataChars))
	case events.StepUncertain:
		say("?", styleYellow, "%s: outcome unknown (its executor stopped mid-step)", e.Name)
	case events.ValueRecorded:
		// Deterministic values are noise in a transcript.
	case events.TimerSet:
		if e.Attr("for") == "" {
			say("⏲", styleBlue, "sleeping until %s", e.Attr("fire_at"))
		}
	case events.TimerFired:
		say("⏲", styleBlue, "timer %d fired", e.Pos)
	case events.Suspended:
		p.approvalBox(e)
	case events.Resumed:
		say("✓", styleGreen, "%s decided by %s: %s", e.Key, orSomeone(e.Attr("decided_by")), decisionText(e.Data))
	case events.WaitRegistered:
		if c := e.Attr("child"); c != "" {
			say("…", styleBlue, "waiting for child run %s", c)
		} else {
			say("…", styleBlue, "waiting for an event on %s", e.Key)
		}
	case events.EventReceived:
		say("✉", styleBlue, "event on %s: %s", e.Key, compactJSON(e.Data, maxDataChars))
	case events.ChildStarted:
		say("↳", styleBlue, "started child run %s (%s)", e.Key, e.Name)
	case events.ChildFinished:
		say("↲", styleBlue, "child run %s finished", e.Key)
	case events.CancelRequest:
		say("■", styleYellow, "cancel requested")
	case events.Annotation:
		say("·", styleDim, "%s %s", e.Name, attrsText(e.Attrs))
	case events.RunCompleted:
		p.StopSpin()
		say("✔", styleGreen, "%s %s", p.style(styleGreen+";"+styleBold, "completed"), compactJSON(e.Data, 400))
	case events.RunFailed:
		p.StopSpin()
		msg := ""
		if e.Err != nil {
			msg = e.Err.Message
		}
		say("✗", styleRed, "%s %s", p.style(styleRed+";"+styleBold, "failed"), msg)
	case events.RunCancelled:
		p.StopSpin()
		say("■", styleYellow, "%s", p.style(styleYellow+";"+styleBold, "cancelled"))
	case events.RunParked:
		msg := ""
		if e.Err != nil {
			msg = e.Err.Message
		}
		say("‼", styleRed, "parked: %s (resume step %s once the code is fixed)", msg, e.Key)
	case events.Unreadable:
		p.StopSpin()
		d, _ := events.DamageOf(e)
		say("‼", styleRed, "%s %s (see `polos history %s --raw`)", p.style(styleRed+";"+styleBold, "unreadable"), d, e.RunID)
	default:
		say("·", styleDim, "%s %s", e.Type, e.Name)
	}
}

func stepVerb(name string) string {
	switch {
	case strings.HasPrefix(name, "llm:"):
		return "model is thinking (" + name + ")"
	case strings.HasPrefix(name, "tool:"):
		return "running " + name
	}
	return "running step " + name
}

// stepCompleted prints a model turn, a tool result or a generic step.
func (p *printer) stepCompleted(e events.Event, say func(mark, style, format string, args ...any)) {
	var m map[string]any
	_ = json.Unmarshal(e.Data, &m)
	switch {
	case strings.HasPrefix(e.Name, "llm:"):
		if r, ok := m["response"].(map[string]any); ok { // an agent's LLM call
			m = r
		}
		text, _ := m["text"].(string)
		if text == "" {
			text, _ = m["content"].(string)
		}
		say("◆", styleCyan, "%s %s", p.style(styleCyan, "model"), truncate(text, 400))
		if tc, ok := m["tool_call"].(map[string]any); ok {
			p.Line("        %s %s", p.style(styleDim, "wants"), truncate(string(marshal(tc, false)), maxDataChars))
		}
		if calls, ok := m["tool_calls"].([]any); ok {
			for _, c := range calls {
				cm, _ := c.(map[string]any)
				p.Line("        %s %v %s", p.style(styleDim, "wants"), cm["name"], truncate(string(marshal(cm["input"], false)), maxDataChars))
			}
		}
	case (strings.HasPrefix(e.Name, "budget:") && string(e.Data) == "null") || (strings.HasPrefix(e.Name, "ratelimit:") && string(e.Data) == "0"):
		// bookkeeping with nothing to say (no budget hit, no rate-limit wait)
	case strings.HasPrefix(e.Name, "policy:"):
		dec, _ := m["decision"].(string)
		why := ""
		if rs, ok := m["reasons"].([]any); ok && len(rs) > 0 {
			r0, _ := rs[0].(map[string]any)
			why = fmt.Sprintf("%v (%v)", r0["why"], r0["rule"])
		}
		style := styleGreen
		switch dec {
		case "ask":
			style = styleYellow
		case "deny":
			style = styleRed
		}
		say("⚖", style, "%s %s %s", e.Name, p.style(style, dec), p.style(styleDim, why))
	case strings.HasPrefix(e.Name, "tool:") && m != nil && isMap(m["output"]) && m["output"].(map[string]any)["exit_code"] == nil:
		say("✓", styleGreen, "%s %s", e.Name, p.style(styleDim, truncate(string(marshal(m["output"], false)), maxDataChars)))
	case strings.HasPrefix(e.Name, "tool:") && m != nil && (m["exit_code"] != nil || isMap(m["output"])):
		if o, ok := m["output"].(map[string]any); ok { // an agent's tool step
			m = o
		}
		code, _ := m["exit_code"].(float64)
		style := styleGreen
		if code != 0 {
			style = styleRed
		}
		say("$", style, "%s exit %d %s", e.Name, int(code), p.style(styleDim, fmt.Sprintf("(%vms)", m["duration_ms"])))
		for _, stream := range []string{"stdout", "stderr"} {
			out, _ := m[stream].(string)
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			if out == "" {
				continue
			}
			for i, l := range lines {
				if i == maxOutputLines {
					p.Line("        %s", p.style(styleDim, fmt.Sprintf("… %d more lines", len(lines)-i)))
					break
				}
				var line any = truncate(l, maxOutputChars)
				if stream == "stderr" {
					line = p.style(styleYellow, truncate(l, maxOutputChars))
				}
				p.Line("        %s", line)
			}
		}
	default:
		say("✓", styleGreen, "%s %s", e.Name, p.style(styleDim, compactJSON(e.Data, maxDataChars)))
	}
}

// approvalBox prints what a waiting step asks for.
func (p *printer) approvalBox(e events.Event) {
	p.StopSpin()
	f := formOf(e.Data)
	title := "waiting for a decision"
	if f != nil && f.Title != "" {
		title = f.Title
	}
	p.Line("%s %s %s %s", p.style(styleDim, fmt.Sprintf("%5d", e.Seq)), p.style(styleYellow, "?"), p.style(styleYellow+";"+styleBold, title), p.style(styleDim, "(step "+e.Key+")"))
	if f == nil {
		if len(e.Data) > 0 {
			p.Line("        %s", compactJSON(e.Data, 400))
		}
		return
	}
	if f.Description != "" {
		p.lines("", f.Description)
	}
	if ctx := f.Context; len(ctx) > 0 {
		keys := make([]string, 0, len(ctx))
		for k := range ctx {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v, ok := ctx[k].(string)
			if !ok {
				v = strings.TrimSpace(string(marshal(ctx[k], false)))
			}
			p.lines(k, v)
		}
	}
}

// lines prints agent-chosen text that may span lines (a script, a
// description) in full, line by line, each line escaped (see textsafe),
// under an optional bold key: the first line after "key: ", the others
// indented to match. What a person approves is shown whole, up to
// maxApprovalLines lines.
func (p *printer) lines(key, text string) {
	const indent = "        "
	var head, cont styled
	if key != "" {
		head = p.style(styleBold, key+":") + " "
		cont = styled(strings.Repeat(" ", utf8.RuneCountInString(textsafe.Escape(key))+2))
	}
	all := textsafe.EscapeLines(text)
	for i, l := range all {
		if i == maxApprovalLines {
			p.Line("%s%s%s", indent, cont, p.style(styleDim, fmt.Sprintf("… %d more lines (polos history -o json shows all)", len(all)-i)))
			return
		}
		if i > 0 {
			head = cont
		}
		p.Line("%s%s%s", indent, head, styled(l))
	}
}

func decisionText(data []byte) string {
	var d struct {
		Approved    *bool  `json:"approved"`
		Feedback    string `json:"feedback"`
		AllowAlways bool   `json:"allow_always"`
	}
	if json.Unmarshal(data, &d) != nil || d.Approved == nil {
		return compactJSON(data, maxDataChars)
	}
	s := "rejected"
	if *d.Approved {
		s = "approved"
		if d.AllowAlways {
			s += " (allow always)"
		}
	}
	if d.Feedback != "" {
		s += ": " + truncate(d.Feedback, maxDataChars)
	}
	return s
}

func attrsText(a map[string]string) string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+truncate(a[k], 80))
	}
	return strings.Join(parts, " ")
}

func orSomeone(s string) string {
	if s == "" {
		return "someone"
	}
	return s
}

// Summary prints a run's state in text form.
func (p *printer) Summary(s events.Summary) {
	statusStyle := map[string]string{events.StatusCompleted: styleGreen, events.StatusFailed: styleRed,
		events.StatusCancelled: styleYellow, events.StatusWaiting: styleYellow, events.StatusRunning: styleCyan, events.StatusDamaged: styleRed}[s.Status]
	p.Line("%s %s", p.style(styleBold, s.ID), p.style(statusStyle+";"+styleBold, s.Status))
	p.Line("  agent:    %s", s.Agent)
	p.Line("  created:  %s", s.CreatedAt.Local().Format(time.DateTime))
	p.Line("  updated:  %s (%d events, last seq %d)", s.UpdatedAt.Local().Format(time.DateTime), s.Events, s.LastSeq)
	if s.Session != "" {
		p.Line("  session:  %s", s.Session)
	}
	if s.Parent != "" {
		p.Line("  parent:   %s", s.Parent)
	}
	if s.ExecUnconfined {
		p.Line("  sandbox:  %s", p.style(styleRed, "exec unconfined (sandbox_local_confinement: none)"))
	}
	if len(s.Result) > 0 {
		p.Line("  result:   %s", compactJSON(s.Result, 400))
	}
	if s.Error != nil {
		p.Line("  error:    %s", p.style(styleRed, s.Error.Message))
	}
	p.printDamage(s)
	for _, w := range s.Waiting {
		line := fmt.Sprintf("  waiting:  %s (%s)", w.StepKey, w.Kind)
		if f := formOf(w.Form); f != nil && f.Title != "" {
			line += " " + f.Title
		}
		p.Line("%s", line)
		if w.Kind == events.WaitApproval || w.Kind == events.WaitOperator {
			p.Line("            decide: %s", p.style(styleDim, resumeHint(s.ID, w.StepKey)))
		}
	}
}

func resumeHint(runID, key string) string {
	return fmt.Sprintf("polos resume %s %s --approve   (or --reject --feedback TEXT)", runID, key)
}

func isMap(v any) bool { _, ok := v.(map[string]any); return ok }
