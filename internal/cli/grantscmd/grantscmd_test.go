package grantscmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/control"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/internal/cli/grantscmd"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/perr"
)

func run(t *testing.T, srv *testutil.Server, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := &cli.App{Name: "polos", Writer: &out, ErrWriter: &out, Commands: []*cli.Command{grantscmd.Command()}, ExitErrHandler: func(*cli.Context, error) {}}
	full := append([]string{"polos", "grants"}, args...)
	full = append(full[:3], append([]string{"--server", srv.ClientURL(), "--creds", srv.CredsFile("operator")}, full[3:]...)...)
	err := app.Run(full)
	return out.String(), err
}

func TestGrantsListAndRevoke(t *testing.T) {
	srv := testutil.StartServer(t)
	url := srv
	gs0, err := hitl.NewGrants(context.Background(), srv.JS, "default")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(srv.NC, "default")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := control.Serve(control.Options{Client: cl, Grants: gs0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	if out, err := run(t, url, "list"); err != nil || !strings.Contains(out, "no grants") {
		t.Fatalf("%q %v", out, err)
	}
	gs, err := hitl.NewGrants(context.Background(), srv.JS, "default")
	if err != nil {
		t.Fatal(err)
	}
	p := hitl.ExecApproval("npm install chalk", "/w", nil)
	d, _ := hitl.ParseDecision(json.RawMessage(`{"approved":true,"allow_always":true}`))
	g, err := hitl.GrantFromDecision(p, d, hitl.Scopes{Session: "s1", Agent: "coder"}, "run_1", "approve_exec_1", "web:tok_1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := gs.Record(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, url, "list")
	if err != nil || !strings.Contains(out, g.ID) || !strings.Contains(out, "exactly: npm install chalk") {
		t.Fatalf("list: %q %v", out, err)
	}
	out, err = run(t, url, "list", "--json", "--kind", "exec", "--scope", "session")
	var list []hitl.Grant
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].RunID != "run_1" {
		t.Fatalf("json: %q %v", out, err)
	}
	if _, err := run(t, url, "list", "--kind", "bogus"); perr.CodeOf(err) != hitl.CodeBadGrant {
		t.Fatalf("bad kind: %v", err)
	}
	if out, err := run(t, url, "revoke", g.ID); err != nil || !strings.Contains(out, "revoked "+g.ID) {
		t.Fatalf("revoke: %q %v", out, err)
	}
	if _, ok, _ := gs.Match(context.Background(), hitl.Scopes{Session: "s1"}, hitl.KindExec, "npm install chalk"); ok {
		t.Fatal("revoked grant still matches")
	}
	if _, err := run(t, url, "revoke", g.ID); perr.CodeOf(err) != hitl.CodeGrantNotFound {
		t.Fatalf("revoke twice: %v", err)
	}
	var out2 bytes.Buffer
	app := &cli.App{Name: "polos", Writer: &out2, ErrWriter: &out2, Commands: []*cli.Command{grantscmd.Command()}, ExitErrHandler: func(*cli.Context, error) {}}
	if err := app.Run([]string{"polos", "grants", "list", "--server", "nats://127.0.0.1:1", "--data-dir", t.TempDir()}); perr.CodeOf(err) != client.CodeUnreachable {
		t.Fatalf("unreachable: %v", err)
	}
}
