package sandbox

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"
)

// Output shaping: exec output is stripped of ANSI escape codes and, past
// MaxExecOutputChars characters, cut in the middle: the first 20% and the
// last 80% of the budget are kept (the end of a build log is where the error
// is) and a marker says how many characters were cut.
const (
	// truncationMarkerReserve is the part of MaxExecOutputChars kept free for
	// the marker, so a shaped output is never longer than MaxExecOutputChars
	// and shaping an already shaped output changes nothing.
	truncationMarkerReserve = 100
	keptHeadChars           = (MaxExecOutputChars - truncationMarkerReserve) * 20 / 100
	keptTailChars           = MaxExecOutputChars - truncationMarkerReserve - keptHeadChars

	// rawBytesPerChar sizes OutputBuffer's raw head and tail so that, after
	// ANSI stripping, enough characters usually remain to fill the budget.
	rawBytesPerChar = 4
)

// ansiEscape matches CSI sequences (colours, cursor moves), OSC sequences
// (window titles, hyperlinks) and the two-byte escapes.
var ansiEscape = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]`)

// StripANSI removes ANSI escape sequences from s, then any stray ESC left
// (a cut-off sequence), so the result holds no ESC at all.
func StripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	return strings.ReplaceAll(ansiEscape.ReplaceAllString(s, ""), "\x1b", "")
}

func truncationMarker(cutChars int64) string {
	return fmt.Sprintf("\n\n... [%d characters truncated] ...\n\n", cutChars)
}

// ShapeOutput strips ANSI codes from s and, when the result is longer than
// MaxExecOutputChars characters, keeps its head and tail around a marker
// saying how many characters were cut. It reports whether it cut anything.
// Shaping is idempotent: a shaped string is returned unchanged.
func ShapeOutput(s string) (string, bool) {
	b := NewOutputBuffer()
	b.WriteString(s)
	return b.Shaped()
}

// OutputBuffer captures a command's output stream with bounded memory: it
// keeps the first and the last few hundred KiB of raw bytes and counts what
// it dropped in between, so a command printing gigabytes cannot exhaust the
// host. Providers write raw output into it (it is an io.Writer, safe for
// concurrent use) and return Shaped() in ExecResult; the shared tool code
// shapes again, which is then a no-op.
type OutputBuffer struct {
	mu           sync.Mutex
	head         []byte
	tail         []byte // the last tailCap bytes once head is full
	droppedChars int64  // characters (UTF-8 lead bytes) dropped between head and tail
	headCap      int
	tailCap      int
}

// NewOutputBuffer returns an empty buffer sized for MaxExecOutputChars.
func NewOutputBuffer() *OutputBuffer {
	return &OutputBuffer{
		headCap: keptHeadChars * rawBytesPerChar,
		tailCap: (MaxExecOutputChars - keptHeadChars) * rawBytesPerChar, // room for a marker: shaping stays idempotent
	}
}

// Write never fails.
func (b *OutputBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if room := b.headCap - len(b.head); room > 0 {
		k := min(room, len(p))
		b.head = append(b.head, p[:k]...)
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	b.tail = append(b.tail, p...)
	if over := len(b.tail) - b.tailCap; over > b.tailCap {
		// Trim in batches so appends stay amortised O(1).
		b.droppedChars += countChars(b.tail[:over])
		b.tail = append(b.tail[:0], b.tail[over:]...)
	}
	return n, nil
}

// WriteString is Write for strings.
func (b *OutputBuffer) WriteString(s string) { b.Write([]byte(s)) }

// Shaped returns the captured output with ANSI codes stripped and, when it is
// too long, cut in the middle with a marker; the bool reports a cut.
func (b *OutputBuffer) Shaped() (string, bool) {
	b.mu.Lock()
	head := b.head
	tail := b.tail
	dropped := b.droppedChars
	if over := len(tail) - b.tailCap; over > 0 {
		dropped += countChars(tail[:over])
		tail = tail[over:]
	}
	var headStr, tailStr string
	if dropped == 0 {
		headStr = string(head) + string(tail)
	} else {
		// Cut at character boundaries: a character split by the drop
		// counts as dropped.
		start := 0
		for start < len(tail) && start < utf8.UTFMax && tail[start]&0xC0 == 0x80 {
			start++
		}
		end := len(head)
		for i := len(head) - 1; i >= 0 && i >= len(head)-utf8.UTFMax; i-- {
			if head[i]&0xC0 != 0x80 {
				if !utf8.FullRune(head[i:]) {
					end = i
					dropped++
				}
				break
			}
		}
		headStr, tailStr = string(head[:end]), string(tail[start:])
	}
	b.mu.Unlock()

	headStr = StripANSI(strings.ToValidUTF8(headStr, "\uFFFD"))
	tailStr = StripANSI(strings.ToValidUTF8(tailStr, "\uFFFD"))
	headN, tailN := int64(utf8.RuneCountInString(headStr)), int64(utf8.RuneCountInString(tailStr))
	if dropped == 0 && headN+tailN <= MaxExecOutputChars {
		return headStr + tailStr, false
	}
	if headN+tailN <= keptHeadChars+keptTailChars {
		// Only a dropped middle to report (ANSI stripping shrank the rest).
		return headStr + truncationMarker(dropped) + tailStr, true
	}
	// Keep keptHeadChars from the start and keptTailChars from the end of
	// head+tail (a dropped middle lies between them).
	all := headStr + tailStr
	keepHead := prefixChars(all, keptHeadChars)
	keepTail := suffixChars(all, keptTailChars)
	cut := headN + tailN + dropped - int64(utf8.RuneCountInString(keepHead)) - int64(utf8.RuneCountInString(keepTail))
	return keepHead + truncationMarker(cut) + keepTail, true
}

func countChars(p []byte) int64 {
	var n int64
	for _, c := range p {
		if c&0xC0 != 0x80 {
			n++
		}
	}
	return n
}

// prefixChars returns the first n characters of s.
func prefixChars(s string, n int) string {
	i := 0
	for k := 0; k < n && i < len(s); k++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i]
}

// suffixChars returns the last n characters of s.
func suffixChars(s string, n int) string {
	i := len(s)
	for k := 0; k < n && i > 0; k++ {
		_, size := utf8.DecodeLastRuneInString(s[:i])
		i -= size
	}
	return s[i:]
}
