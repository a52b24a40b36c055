package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture builds a workspace and an outside directory on disk:
//
//	ws/sub/file.txt
//	ws/link      -> outside            (a parent-directory symlink)
//	ws/leaf.txt  -> outside/target.txt (a symlinked leaf)
//	ws/in        -> ws/sub             (a symlink that stays inside)
//	ws/deep      -> outside/a/b
//	ws/rel       -> ../<outside>        (relative target)
//	ws/loop1 <-> ws/loop2
//	ws/back      -> outside/back -> ws  (leaves and comes back)
//	ws/hard.txt  == outside/hard.txt    (a hard link)
type fixture struct {
	ws, outside string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	base := t.TempDir()
	f := fixture{ws: filepath.Join(base, "ws"), outside: filepath.Join(base, "outside")}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(f.ws, "sub"), 0o755))
	must(os.MkdirAll(filepath.Join(f.outside, "a", "b"), 0o755))
	must(os.WriteFile(filepath.Join(f.ws, "sub", "file.txt"), []byte("x"), 0o644))
	must(os.WriteFile(filepath.Join(f.outside, "target.txt"), []byte("secret"), 0o644))
	must(os.WriteFile(filepath.Join(f.outside, "hard.txt"), []byte("secret"), 0o644))
	must(os.Symlink(f.outside, filepath.Join(f.ws, "link")))
	must(os.Symlink(filepath.Join(f.outside, "target.txt"), filepath.Join(f.ws, "leaf.txt")))
	must(os.Symlink(filepath.Join(f.ws, "sub"), filepath.Join(f.ws, "in")))
	must(os.Symlink(filepath.Join(f.outside, "a", "b"), filepath.Join(f.ws, "deep")))
	must(os.Symlink(filepath.Join("..", "outside"), filepath.Join(f.ws, "rel")))
	must(os.Symlink("loop2", filepath.Join(f.ws, "loop1")))
	must(os.Symlink("loop1", filepath.Join(f.ws, "loop2")))
	must(os.Symlink(f.ws, filepath.Join(f.outside, "back")))
	must(os.Symlink(filepath.Join(f.outside, "back"), filepath.Join(f.ws, "back")))
	must(os.Link(filepath.Join(f.outside, "hard.txt"), filepath.Join(f.ws, "hard.txt")))
	return f
}

func TestCheckPathLocal(t *testing.T) {
	f := newFixture(t)
	p, err := New(Config{FileApproval: FileApprovalNone}) // writes inside run, to see the path rules alone
	if err != nil {
		t.Fatal(err)
	}
	ctx := Context{Env: EnvLocal, Workspace: f.ws}
	cases := []struct {
		op   Op
		path string
		want Decision
	}{
		{OpRead, "sub/file.txt", A},
		{OpWrite, "sub/new.txt", A},
		{OpEdit, "sub/file.txt", A},
		{OpWrite, "new/dir/file.txt", A},
		{OpRead, filepath.Join(f.ws, "sub", "file.txt"), A},
		{OpWrite, "in/x.txt", A}, // a symlink that stays inside
		{OpRead, "in/file.txt", A},
		{OpGlob, "**/*.go", A},
		{OpGrep, "", A},
		{OpGlob, "src/**/*.go", A},

		// parent-directory symlink
		{OpRead, "link/target.txt", Q},
		{OpWrite, "link/new.txt", D},
		{OpEdit, "link/target.txt", D},
		{OpGlob, "link/**", Q},
		{OpGrep, "link", Q},
		// write through a symlinked leaf
		{OpWrite, "leaf.txt", D},
		{OpEdit, "leaf.txt", D},
		{OpRead, "leaf.txt", Q},
		// `..`
		{OpRead, "../outside/target.txt", Q},
		{OpWrite, "../outside/x", D},
		{OpWrite, "sub/../../x", D},
		{OpWrite, "sub/../ok.txt", A},
		{OpGlob, "../**/*.go", Q},
		{OpGlob, "sub/*/../../..", Q},
		// absolute paths
		{OpRead, "/etc/passwd", Q},
		{OpWrite, "/etc/passwd", D},
		{OpEdit, "/etc/hosts", D},
		{OpGrep, "/", Q},
		// `..` after a symlink climbs from the link's target
		{OpWrite, "deep/../x", D},
		{OpWrite, "deep/../../../ws/sub/x", D},
		// relative symlink target, loops, leaving and coming back
		{OpRead, "rel/target.txt", Q},
		{OpWrite, "loop1/x", D},
		{OpWrite, "back/sub/x", D},
		// a hard link to a file outside
		{OpWrite, "hard.txt", Q},
		{OpRead, "hard.txt", A},
		// malformed
		{OpWrite, "", D},
		{OpRead, "a\x00b", D},
	}
	for _, tc := range cases {
		got := p.CheckPath(tc.op, tc.path, ctx)
		if got.Decision != tc.want {
			t.Errorf("%s %q: got %s, want %s\n%s", tc.op, tc.path, got.Decision, tc.want, explain(got))
		}
		if len(got.Reasons) == 0 || got.Reasons[0].Why == "" {
			t.Errorf("%s %q: no explanation", tc.op, tc.path)
		}
	}
}

func TestCheckPathWorkspaceBehindSymlink(t *testing.T) {
	f := newFixture(t)
	alias := filepath.Join(t.TempDir(), "alias")
	if err := os.Symlink(f.ws, alias); err != nil {
		t.Fatal(err)
	}
	p, _ := New(Config{FileApproval: FileApprovalNone})
	ctx := Context{Env: EnvLocal, Workspace: alias}
	for path, want := range map[string]Decision{"sub/new.txt": A, "link/x": D, filepath.Join(alias, "sub", "y"): A, "../x": D} {
		if got := p.CheckPath(OpWrite, path, ctx); got.Decision != want {
			t.Errorf("%q: got %s, want %s\n%s", path, got.Decision, want, explain(got))
		}
	}
}

func TestCheckPathRulesAndDefaults(t *testing.T) {
	f := newFixture(t)
	allowed := filepath.Join(f.outside, "a")
	p, err := New(Config{Paths: PathRules{Allow: []string{allowed + "/**"}, Deny: []string{"**/.env"}, Ask: []string{"secrets/**"}}})
	if err != nil {
		t.Fatal(err)
	}
	local := Context{Env: EnvLocal, Workspace: f.ws}
	docker := Context{Env: EnvDocker, Workspace: f.ws}
	cases := []struct {
		ctx  Context
		op   Op
		path string
		want Decision
	}{
		{local, OpWrite, "sub/x", Q},                           // file_approval defaults to always for local
		{docker, OpWrite, "sub/x", A},                          // and to none for docker
		{local, OpRead, filepath.Join(allowed, "b", "f"), A},   // outside, explicitly allowed
		{docker, OpWrite, filepath.Join(allowed, "b", "f"), A}, // allowed, then the write setting
		{local, OpWrite, filepath.Join(allowed, "b", "f"), Q},  // allowed, then the write setting
		{local, OpRead, ".env", D},                             // deny rule inside
		{local, OpRead, "sub/.env", D},                         //
		{docker, OpRead, "secrets/key", Q},                     // ask rule
		{docker, OpRead, "/etc/passwd", A},                     // docker: the container is the boundary
		{docker, OpWrite, "/etc/passwd", A},                    //
		{Context{Env: EnvLocal}, OpRead, "x", Q},               // no workspace: nothing is inside
		{Context{Env: EnvLocal}, OpWrite, "/x", D},             //
		{Context{Env: EnvE2B, Workspace: "/home/user"}, OpWrite, "/tmp/x", A},
	}
	for _, tc := range cases {
		if got := p.CheckPath(tc.op, tc.path, tc.ctx); got.Decision != tc.want {
			t.Errorf("%s %s %q: got %s, want %s\n%s", tc.ctx.Env, tc.op, tc.path, got.Decision, tc.want, explain(got))
		}
	}

	// path_restriction confines docker too (lexically: the files are not here).
	pr, _ := New(Config{PathRestriction: "/workspace", FileApproval: FileApprovalNone})
	dctx := Context{Env: EnvDocker, Workspace: "/workspace"}
	for path, want := range map[string]Decision{"a.txt": A, "/workspace/b": A, "/etc/x": D, "../x": D} {
		if got := pr.CheckPath(OpWrite, path, dctx); got.Decision != want {
			t.Errorf("docker path_restriction %q: got %s, want %s\n%s", path, got.Decision, want, explain(got))
		}
	}
}

func TestRedirectionThroughSymlink(t *testing.T) {
	f := newFixture(t)
	cfg := seedPolicies["allowlist"]
	cfg.FileApproval = FileApprovalNone // writes inside run, to see the path rules alone
	p, _ := New(cfg)
	ctx := Context{Env: EnvLocal, Workspace: f.ws}
	for cmd, want := range map[string]Decision{
		"echo x > sub/out.txt":         A,
		"echo x > link/out.txt":        Q,
		"echo x > leaf.txt":            Q,
		"echo x > deep/../x":           Q,
		"echo x > " + f.ws + "/sub/ok": A,
	} {
		if got := p.CheckCommand(cmd, ctx); got.Decision != want {
			t.Errorf("%q: got %s, want %s\n%s", cmd, got.Decision, want, explain(got))
		}
	}
}

func TestResolvePhysicalExplains(t *testing.T) {
	f := newFixture(t)
	p, _ := New(Config{})
	got := p.CheckPath(OpWrite, "link/x", Context{Env: EnvLocal, Workspace: f.ws})
	if !strings.Contains(got.Reasons[0].Why, "symlink") {
		t.Errorf("the reason should name the symlink: %+v", got.Reasons)
	}
}

func TestRedirectionAfterCd(t *testing.T) {
	f := newFixture(t)
	p, _ := New(Config{Commands: CommandRules{Allow: []string{"cd *", "echo *"}}, FileApproval: FileApprovalNone})
	ctx := Context{Env: EnvLocal, Workspace: f.ws}
	for cmd, want := range map[string]Decision{
		"cd sub && echo x > ../ok.txt":        A, // ws/ok.txt
		"cd sub && echo x > ../../escape.txt": Q,
		"cd /etc && echo x > passwd":          Q,
		"cd $D && echo x > f":                 Q,
		"cd sub && echo x > f":                A,
	} {
		if got := p.CheckCommand(cmd, ctx); got.Decision != want {
			t.Errorf("%q: got %s, want %s\n%s", cmd, got.Decision, want, explain(got))
		}
	}
}
