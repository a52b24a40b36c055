package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/polos-run/polos/internal/textsafe"
)

// SpinnerInterval is how often the spinner advances.
const SpinnerInterval = 100 * time.Millisecond

// ANSI styles used in text output (only on a terminal, never when piped,
// and never when NO_COLOR is set).
const (
	styleBold   = "1"
	styleDim    = "2"
	styleRed    = "31"
	styleGreen  = "32"
	styleYellow = "33"
	styleBlue   = "34"
	styleCyan   = "36"
)

// printer writes one command's output in the chosen format. It owns the
// spinner so a line of output never mixes with a spinner frame.
//
// Text output is safe to show on a terminal: every string that reaches it
// (a command, a path, a form title, model text) goes through
// textsafe.Escape, so control, bidi and invisible characters are shown
// escaped (\u{1b}, \u{202e}) instead of acting on the terminal. The only
// raw escapes written are the printer's own styles: style returns a styled
// value, and Line and sprintf escape every argument that is not one. JSON
// output goes through textsafe.EscapeJSON, which decodes to the same values.
type printer struct {
	io     IO
	format string
	colour bool

	mu      sync.Mutex
	spinMsg string
	spinOn  bool
	stop    chan struct{}
}

func newPrinter(s IO, format string) *printer {
	return &printer{io: s, format: format, colour: s.OutTTY && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"}
}

func (p *printer) text() bool { return p.format == OutText }

// styled is text that is safe to write to a terminal as it is: escaped
// text, with the printer's own ANSI styles around it.
type styled string

// style escapes s and wraps it in an ANSI style when colour is on.
func (p *printer) style(code, s string) styled {
	s = textsafe.Escape(s)
	if !p.colour || s == "" {
		return styled(s)
	}
	return styled("\033[" + code + "m" + s + "\033[0m")
}

// sprintf formats like fmt.Sprintf with every argument made safe (see
// safeArg); format itself must be a constant of the program.
func (p *printer) sprintf(format string, args ...any) styled {
	safe := make([]any, len(args))
	for i, a := range args {
		safe[i] = safeArg(a)
	}
	return styled(fmt.Sprintf(format, safe...))
}

// safeArg returns a as it may be formatted for a terminal: styled values
// and numbers as they are, everything else (strings, errors, maps of
// whatever an agent chose) as its escaped text.
func safeArg(a any) any {
	switch v := a.(type) {
	case styled:
		return v
	case string:
		return textsafe.Escape(v)
	case error:
		return textsafe.Escape(v.Error())
	case nil:
		return a
	}
	switch reflect.TypeOf(a).Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return a
	}
	return textsafe.Escape(fmt.Sprint(a))
}

// Line prints one line of text output; its arguments are made safe as by
// sprintf.
func (p *printer) Line(format string, args ...any) {
	line := p.sprintf(format, args...)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearSpinner()
	fmt.Fprintf(p.io.Out, "%s\n", line)
}

// Text prints text that may span lines (a run's result), each line
// escaped as by Line.
func (p *printer) Text(s string) {
	for _, l := range textsafe.EscapeLines(s) {
		p.Line("%s", styled(l))
	}
}

// write prints s (a prompt, no newline) between spinner frames.
func (p *printer) write(s styled) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearSpinner()
	fmt.Fprint(p.io.Out, s)
}

// JSON prints v: indented for json, one line for jsonl. Unsafe characters
// in strings are written as JSON escapes (the value is the same).
func (p *printer) JSON(v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearSpinner()
	p.io.Out.Write(textsafe.EscapeJSON(marshal(v, p.format == OutJSON)))
}

// Spin shows msg with a spinner until the next Line (terminal text output
// only; a no-op otherwise).
func (p *printer) Spin(msg string) {
	if !p.io.OutTTY || !p.text() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spinMsg, p.spinOn = textsafe.Escape(msg), true
	if p.stop == nil {
		p.stop = make(chan struct{})
		go p.spinLoop(p.stop)
	}
}

// StopSpin hides the spinner for good.
func (p *printer) StopSpin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearSpinner()
	p.spinOn = false
	if p.stop != nil {
		close(p.stop)
		p.stop = nil
	}
}

func (p *printer) spinLoop(stop chan struct{}) {
	frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
	t := time.NewTicker(SpinnerInterval)
	defer t.Stop()
	start := time.Now()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		if p.spinOn {
			fmt.Fprintf(p.io.Out, "\r\033[K%s %s %s", p.style(styleCyan, frames[i%len(frames)]), p.spinMsg,
				p.style(styleDim, fmt.Sprintf("%.1fs", time.Since(start).Seconds())))
		}
		p.mu.Unlock()
	}
}

// clearSpinner erases the spinner line; the caller holds mu.
func (p *printer) clearSpinner() {
	if p.spinOn && p.io.OutTTY {
		fmt.Fprint(p.io.Out, "\r\033[K")
	}
}

// truncate shortens s to n runes, on one line.
func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// compactJSON renders raw JSON on one line, truncated.
func compactJSON(raw []byte, n int) string {
	if len(raw) == 0 {
		return ""
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return truncate(string(raw), n)
	}
	return truncate(strings.TrimSpace(string(marshal(v, false))), n)
}

// marshal encodes v as JSON without HTML escaping (so `>` and `&` in
// commands stay readable), with a trailing newline.
func marshal(v any, indent bool) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if indent {
		enc.SetIndent("", "  ")
	}
	_ = enc.Encode(v)
	return buf.Bytes()
}

// pretty renders raw JSON for people: a JSON string as its text, anything
// else indented.
func pretty(raw []byte) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	if s, ok := v.(string); ok {
		return s
	}
	return strings.TrimSpace(string(marshal(v, true)))
}
