package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
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

// style wraps s in an ANSI style when colour is on.
func (p *printer) style(code, s string) string {
	if !p.colour || s == "" {
		return s
	}
	return "\033[" + code + "m" + s + "\033[0m"
}

// Line prints one line of text output.
func (p *printer) Line(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearSpinner()
	fmt.Fprintf(p.io.Out, format+"\n", args...)
}

// JSON prints v: indented for json, one line for jsonl.
func (p *printer) JSON(v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearSpinner()
	p.io.Out.Write(marshal(v, p.format == OutJSON))
}

// Spin shows msg with a spinner until the next Line (terminal text output
// only; a no-op otherwise).
func (p *printer) Spin(msg string) {
	if !p.io.OutTTY || !p.text() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spinMsg, p.spinOn = msg, true
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
