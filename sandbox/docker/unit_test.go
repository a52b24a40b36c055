package docker

import (
	"errors"
	"io/fs"
	"math/rand"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]int64{
		"2g": 2 << 30, "2G": 2 << 30, "512m": 512 << 20, "512M": 512 << 20, "1.5g": 3 << 29,
		"2gb": 2 << 30, "2GiB": 2 << 30, "1048576k": 1 << 30, "1t": 1 << 40, " 64m ": 64 << 20,
		"10485760": 10 << 20, "10485760b": 10 << 20, "6m": 6 << 20,
	} {
		got, err := ParseMemory(in)
		if err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "g", "2x", "-1g", "1..2g", "1e9", "2 g b", "0", "1m", "5m", "1k", "9999999999t", "0x10m", "NaN", "inf"} {
		if got, err := ParseMemory(in); perr.CodeOf(err) != sandbox.CodeBadRequest {
			t.Errorf("ParseMemory(%q) = %d, %v; want %s", in, got, err, sandbox.CodeBadRequest)
		}
	}
}

func FuzzParseMemory(f *testing.F) {
	for _, s := range []string{"2g", "512m", "1.5G", "2GiB", "123", "", "1e3g", "..g", "9999999999999999999999t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseMemory(s)
		if err != nil {
			if perr.CodeOf(err) != sandbox.CodeBadRequest {
				t.Fatalf("ParseMemory(%q): uncoded error %v", s, err)
			}
			return
		}
		if n < MinMemoryBytes || n > 1<<53 {
			t.Fatalf("ParseMemory(%q) = %d, out of range", s, n)
		}
	})
}

func TestResolveSpecDefaults(t *testing.T) {
	s, err := resolveSpec(sandbox.Spec{Owner: "run-1"}, DefaultUser, DefaultImage)
	if err != nil {
		t.Fatal(err)
	}
	if s.image != DefaultImage || s.scope != ScopeRun || s.network != NetworkNone || s.memory != 2<<30 ||
		s.nanoCPUs != 1e9 || s.pidsLimit != DefaultPidsLimit || s.uid != 1000 || s.gid != 1000 {
		t.Errorf("defaults: %+v", s)
	}
	cfg, hc := containerConfig(s, "h1")
	if cfg.Labels[LabelOwner] != "run-1" || cfg.Labels[LabelHost] != "h1" || cfg.User != "1000:1000" ||
		!strings.Contains(hc.Tmpfs[WorkspacePath], "uid=1000,gid=1000") || hc.Mounts != nil {
		t.Errorf("config: %+v %+v", cfg, hc)
	}
	s.workspaceDir = "/srv/ws"
	_, hc = containerConfig(s, "h1")
	if len(hc.Mounts) != 1 || hc.Mounts[0].Source != "/srv/ws" || hc.Mounts[0].Target != WorkspacePath || hc.Tmpfs[WorkspacePath] != "" {
		t.Errorf("bind mount: %+v", hc)
	}
}

func TestParseUser(t *testing.T) {
	if uid, gid, err := parseUser("1000:1001"); err != nil || uid != 1000 || gid != 1001 {
		t.Errorf("1000:1001 = %d %d %v", uid, gid, err)
	}
	for _, u := range []string{"0:0", "root", "node:node", "1000", "-1:5", "1000:x", ""} {
		if _, _, err := parseUser(u); perr.CodeOf(err) != sandbox.CodeBadRequest {
			t.Errorf("parseUser(%q): %v", u, err)
		}
	}
}

func TestContainerName(t *testing.T) {
	for _, owner := range []string{"run-1", "a/b c;$(x)", strings.Repeat("é", 100), "ok_.-"} {
		n := containerName(owner)
		if !strings.HasPrefix(n, "polos-") || len(n) > 64 {
			t.Errorf("containerName(%q) = %q", owner, n)
		}
		for _, r := range n {
			if !(r == '_' || r == '.' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				t.Errorf("containerName(%q) = %q has %q", owner, n, r)
			}
		}
	}
	if containerName("x") == containerName("x") {
		t.Error("container names repeat")
	}
}

func TestWritableBy(t *testing.T) {
	for _, c := range []struct {
		mode       os.FileMode
		ouid, ogid int
		want       bool
	}{
		{0o755, 1000, 0, true}, {0o555, 1000, 0, false}, {0o700, 0, 0, false},
		{0o775, 0, 1000, true}, {0o755, 0, 1000, false}, {0o777, 0, 0, true}, {0o1777, 5, 5, true}, {0o776, 0, 0, false},
	} {
		if got := writableBy(c.mode, c.ouid, c.ogid, 1000, 1000); got != c.want {
			t.Errorf("writableBy(%v, %d:%d) = %v", c.mode, c.ouid, c.ogid, got)
		}
	}
}

func TestEnvList(t *testing.T) {
	got, err := envList(map[string]string{"B": "2", "A_1": "x=y $(z)", "_": ""})
	if err != nil || !slices.Equal(got, []string{"A_1=x=y $(z)", "B=2", "_="}) {
		t.Errorf("envList = %q, %v", got, err)
	}
	for _, k := range []string{"", "1A", "A=B", "A-B", "-i", "A B", "é"} {
		if _, err := envList(map[string]string{k: "v"}); perr.CodeOf(err) != sandbox.CodeBadRequest {
			t.Errorf("envList(%q): %v", k, err)
		}
	}
	if _, err := envList(map[string]string{"A": "a\x00b"}); perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Errorf("NUL value: %v", err)
	}
}

func TestResolve(t *testing.T) {
	confined, free := &Backend{}, &Backend{unconfined: true}
	for in, want := range map[string]string{"": "/workspace", ".": "/workspace", "a/../b": "/workspace/b", "/workspace/x/": "/workspace/x"} {
		for _, b := range []*Backend{confined, free} {
			if got, err := b.resolve(in); err != nil || got != want {
				t.Errorf("resolve(%q, unconfined=%v) = %q, %v; want %q", in, b.unconfined, got, err, want)
			}
		}
	}
	for _, in := range []string{"..", "../x", "/etc/passwd", "/", "/workspace2", "a/../../x"} {
		if _, err := confined.resolve(in); perr.CodeOf(err) != sandbox.CodeOutsideWorkspace {
			t.Errorf("confined resolve(%q): %v", in, err)
		}
		got, err := free.resolve(in)
		if err != nil || !path.IsAbs(got) || path.Clean(got) != got {
			t.Errorf("unconfined resolve(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := free.resolve("a\x00b"); perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Errorf("NUL: %v", err)
	}
	if confined.confineRoot() != "/workspace/" || free.confineRoot() != "/" {
		t.Error("confineRoot")
	}
}

func FuzzResolveUnconfined(f *testing.F) {
	for _, s := range []string{"", "a", "../../x", "/a/./b/../c", "//x", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := resolveUnconfined(s)
		if err != nil {
			return
		}
		if !path.IsAbs(got) || path.Clean(got) != got || strings.IndexByte(got, 0) >= 0 {
			t.Fatalf("resolveUnconfined(%q) = %q", s, got)
		}
	})
}

func TestParseWalkOutput(t *testing.T) {
	out := "/workspace/d/a\x00/workspace/d/a-c\x00/workspace/d/a/b\x00\x00/workspace/d/a/b/f\x00/workspace/d/z\x00/workspace/d/a/new\nline\x00"
	got := parseWalkOutput([]byte(out), "/workspace/d")
	want := []walkEntry{{"a", true}, {"a/b", true}, {"a/b/f", false}, {"a/new\nline", false}, {"a-c", true}, {"z", false}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	if got := parseWalkOutput([]byte("/x\x00\x00/y\x00"), "/"); !slices.Equal(got, []walkEntry{{"x", true}, {"y", false}}) {
		t.Errorf("root /: %v", got)
	}
	if got := parseWalkOutput(nil, "/w"); len(got) != 0 {
		t.Errorf("empty: %v", got)
	}
}

// The walk order is filepath.WalkDir's: component by component.
func TestCompareWalkOrderMatchesWalkDir(t *testing.T) {
	dir := t.TempDir()
	names := []string{"a", "a-c", "a.b", "a/b", "a/b/c", "a/b-", "b", "A", "a0", "a/c", "a-c/x"}
	for _, n := range names {
		if err := os.MkdirAll(path.Join(dir, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var walkDir []string
	err := fs.WalkDir(os.DirFS(dir), ".", func(p string, _ fs.DirEntry, err error) error {
		if p != "." {
			walkDir = append(walkDir, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	shuffled := slices.Clone(walkDir)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	sort.Slice(shuffled, func(i, j int) bool { return compareWalkOrder(shuffled[i], shuffled[j]) < 0 })
	if !slices.Equal(shuffled, walkDir) {
		t.Errorf("order %q\nWalkDir %q", shuffled, walkDir)
	}
}

func TestVisitWalk(t *testing.T) {
	entries := []walkEntry{{"a", true}, {"a/b", true}, {"a/b/f", false}, {"a/c", false}, {"a/d", false}, {"e", true}, {"e/f", false}, {"g", false}}
	visit := func(decide func(rel string, isDir bool) error) ([]string, error) {
		var seen []string
		err := visitWalk(entries, func(rel string, isDir bool) error {
			seen = append(seen, rel)
			return decide(rel, isDir)
		})
		return seen, err
	}
	seen, _ := visit(func(rel string, _ bool) error {
		if rel == "a/b" {
			return fs.SkipDir
		}
		return nil
	})
	if want := []string{"a", "a/b", "a/c", "a/d", "e", "e/f", "g"}; !slices.Equal(seen, want) {
		t.Errorf("SkipDir on a dir: %q", seen)
	}
	seen, _ = visit(func(rel string, _ bool) error {
		if rel == "a/c" {
			return fs.SkipDir
		}
		return nil
	})
	if want := []string{"a", "a/b", "a/b/f", "a/c", "e", "e/f", "g"}; !slices.Equal(seen, want) {
		t.Errorf("SkipDir on a file skips its siblings: %q", seen)
	}
	seen, err := visit(func(rel string, _ bool) error {
		if rel == "g" {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil || len(seen) != len(entries) {
		t.Errorf("SkipDir on a top-level file: %q %v", seen, err)
	}
	seen, err = visit(func(rel string, _ bool) error {
		if rel == "a/b/f" {
			return fs.SkipAll
		}
		return nil
	})
	if err != nil || !slices.Equal(seen, []string{"a", "a/b", "a/b/f"}) {
		t.Errorf("SkipAll: %q %v", seen, err)
	}
	boom := errors.New("boom")
	if _, err := visit(func(string, bool) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("error: %v", err)
	}
}

func TestPIDLine(t *testing.T) {
	// The first line may arrive in pieces; the rest is output.
	l := newPIDLine(sandbox.NewOutputBuffer())
	for _, piece := range []string{"polos-", "pid 4", "2\nhel", "lo\n"} {
		if n, err := l.Write([]byte(piece)); n != len(piece) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", piece, n, err)
		}
	}
	if out, _ := l.rest.Shaped(); l.status() != "pid" || l.pid() != 42 || out != "hello\n" {
		t.Errorf("status %q pid %d out %q", l.status(), l.pid(), out)
	}
	select {
	case <-l.known:
	default:
		t.Error("known not closed")
	}
	// Output that is not the wrapper's is kept.
	l = newPIDLine(sandbox.NewOutputBuffer())
	long := strings.Repeat("x", 100)
	l.Write([]byte(long))
	if out, _ := l.rest.Shaped(); l.status() != "bad" || out != long {
		t.Errorf("status %q out %q", l.status(), out)
	}
	for line, kind := range map[string]string{"polos-nocwd": "nocwd", "polos-outside": "outside", "polos-notmp": "notmp",
		"polos-pid 1": "bad", "polos-pid -5": "bad", "polos-pid x": "bad", "": "bad", "polos-pid 77": "pid"} {
		if k, _ := parsePIDLine(line); k != kind {
			t.Errorf("parsePIDLine(%q) = %q, want %q", line, k, kind)
		}
	}
}

func FuzzPIDLine(f *testing.F) {
	f.Add("polos-pid 12\nout", 3)
	f.Add("polos-outside\n", 1)
	f.Add("garbage", 2)
	f.Fuzz(func(t *testing.T, s string, cut int) {
		l := newPIDLine(sandbox.NewOutputBuffer())
		if cut < 0 || cut > len(s) {
			cut = len(s) / 2
		}
		l.Write([]byte(s[:cut]))
		l.Write([]byte(s[cut:]))
		out, _ := l.rest.Shaped()
		first, rest, found := strings.Cut(s, "\n")
		switch l.status() {
		case "pid", "nocwd", "outside", "notmp":
			if !found || len(first) > maxPIDLine {
				t.Fatalf("%q parsed as %s", s, l.status())
			}
			if want, _ := sandbox.ShapeOutput(rest); out != want {
				t.Fatalf("%q: rest %q, want %q", s, out, want)
			}
		}
	})
}
