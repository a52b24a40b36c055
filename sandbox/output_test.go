package sandbox

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestShapeOutputShort(t *testing.T) {
	in := "\x1b[1;31merror\x1b[0m: \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ done\n"
	got, cut := ShapeOutput(in)
	if got != "error: link done\n" || cut {
		t.Errorf("ShapeOutput = %q, %v", got, cut)
	}
}

func TestShapeOutputLong(t *testing.T) {
	for _, unit := range []string{"x", "é", "漢", "🙂"} {
		in := "HEAD" + strings.Repeat(unit, 300_000) + "TAIL"
		got, cut := ShapeOutput(in)
		if !cut || !strings.HasPrefix(got, "HEAD") || !strings.HasSuffix(got, "TAIL") {
			t.Fatalf("%s: cut %v, %q...", unit, cut, got[:20])
		}
		if n := utf8.RuneCountInString(got); n > MaxExecOutputChars {
			t.Errorf("%s: shaped output has %d characters", unit, n)
		}
		if !utf8.ValidString(got) {
			t.Errorf("%s: shaped output is not valid UTF-8", unit)
		}
		var n int
		i := strings.Index(got, "... [")
		if _, err := fmt.Sscanf(got[i:], "... [%d characters truncated]", &n); err != nil {
			t.Fatal(err)
		}
		if kept := utf8.RuneCountInString(got) - utf8.RuneCountInString(truncationMarker(int64(n))); kept+n != 300_008 {
			t.Errorf("%s: kept %d + cut %d != %d", unit, kept, n, 300_008)
		}
		if again, cut2 := ShapeOutput(got); again != got || cut2 {
			t.Errorf("%s: shaping is not idempotent", unit)
		}
	}
}

// TestOutputBufferStreaming writes in small chunks, as a pipe delivers.
func TestOutputBufferStreaming(t *testing.T) {
	b := NewOutputBuffer()
	total := 0
	for i := 0; i < 50_000; i++ {
		line := fmt.Sprintf("line %d\n", i)
		total += len(line)
		b.Write([]byte(line))
	}
	got, cut := b.Shaped()
	if !cut || !strings.HasPrefix(got, "line 0\n") || !strings.HasSuffix(got, "line 49999\n") {
		t.Fatalf("cut %v, %q ... %q", cut, got[:20], got[len(got)-20:])
	}
	if len(b.head)+len(b.tail) > 2*(b.headCap+b.tailCap) {
		t.Errorf("buffer holds %d bytes", len(b.head)+len(b.tail))
	}
}

func FuzzShapeOutput(f *testing.F) {
	f.Add("plain", 1)
	f.Add("\x1b[31mred\x1b[0m", 1)
	f.Add("\x1b]0;t\x07x\xff\xfe", 40_000)
	f.Add("é漢🙂\x1b", 30_000)
	f.Fuzz(func(t *testing.T, s string, repeat int) {
		if repeat < 1 || repeat > 200_000 || len(s)*repeat > 4<<20 {
			return
		}
		in := strings.Repeat(s, repeat)
		got, _ := ShapeOutput(in)
		if utf8.RuneCountInString(got) > MaxExecOutputChars {
			t.Fatalf("shaped output has %d characters", utf8.RuneCountInString(got))
		}
		if !utf8.ValidString(got) {
			t.Fatal("shaped output is not valid UTF-8")
		}
		if again, _ := ShapeOutput(got); again != got {
			t.Fatal("not idempotent")
		}
	})
}

func TestWorkspaceRel(t *testing.T) {
	for _, c := range []struct{ in, want, code string }{
		{"", ".", ""},
		{"a/b", "a/b", ""},
		{"./a//b/", "a/b", ""},
		{"a/../b", "b", ""},
		{"/ws", ".", ""},
		{"/ws/a/../b", "b", ""},
		{"..", "", string(CodeOutsideWorkspace)},
		{"../x", "", string(CodeOutsideWorkspace)},
		{"a/../../x", "", string(CodeOutsideWorkspace)},
		{"/wsx/a", "", string(CodeOutsideWorkspace)},
		{"/etc/passwd", "", string(CodeOutsideWorkspace)},
		{"/ws/../etc", "", string(CodeOutsideWorkspace)},
		{"a\x00b", "", string(CodeBadRequest)},
	} {
		got, err := WorkspaceRel("/ws", c.in)
		if got != c.want || string(perrCode(err)) != c.code {
			t.Errorf("WorkspaceRel(%q) = %q, %v; want %q, %s", c.in, got, err, c.want, c.code)
		}
	}
}

func FuzzWorkspaceRel(f *testing.F) {
	for _, s := range []string{"", "a", "../a", "/ws/a", "/ws/../x", "a/./../..", "//ws//a", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rel, err := WorkspaceRel("/ws", p)
		if err != nil {
			return
		}
		if rel == ".." || strings.HasPrefix(rel, "../") || strings.HasPrefix(rel, "/") || strings.Contains(rel, "/../") {
			t.Fatalf("WorkspaceRel(%q) = %q escapes", p, rel)
		}
	})
}
