package multiagent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/agent"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/examples/multiagent"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/dispatch"
	"github.com/polos-run/polos/sandbox/local"
)

func TestReleaseFlowSharesOneSandboxAndWaitsBeforePublishing(t *testing.T) {
	srv := testutil.StartServer(t)
	reg := polos.NewRegistry()
	root := t.TempDir()
	testutil.SandboxHost(t, srv.NC, []string{root}, local.New())
	deps := agent.Deps{Sandboxes: func(env string) (sandbox.Provider, error) { return dispatch.NewClient(srv.NC, "default", env) }}
	if err := multiagent.Register(reg, deps, root); err != nil {
		t.Fatal(err)
	}
	ex, _ := executor.New(srv.NC, srv.JS, reg, executor.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ex.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	cl, _ := client.New(srv.NC, "default")
	id, _, err := cl.Start(context.Background(), multiagent.Workflow, "add two numbers", client.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		s, err := cl.Status(context.Background(), id)
		if err != nil {
			return err
		}
		if len(s.Waiting) == 1 && s.Waiting[0].StepKey == multiagent.PublishKey {
			return nil
		}
		if s.Status == events.StatusFailed {
			t.Fatalf("flow failed: %+v", s.Error)
		}
		return fmt.Errorf("status %s %+v", s.Status, s.Waiting)
	})
	ws := filepath.Join(root, id)
	if _, err := os.Stat(filepath.Join(ws, "PUBLISHED")); err == nil {
		t.Fatal("published before the approval")
	}
	for _, f := range []string{"add.js", "add.test.js"} {
		if _, err := os.Stat(filepath.Join(ws, f)); err != nil {
			dump(t, cl, id)
			t.Fatalf("coder's %s not in the shared workspace: %v", f, err)
		}
	}
	if _, err := cl.Resume(context.Background(), id, multiagent.PublishKey, client.Decision{Data: json.RawMessage(`{"approved":true}`), Validate: hitl.Validate}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer rcancel()
	s, err := cl.Result(rctx, id)
	if err != nil || s.Status != events.StatusCompleted {
		t.Fatalf("%v %s %+v", err, s.Status, s.Error)
	}
	if !strings.Contains(string(s.Result), `"published":"true"`) || !strings.Contains(string(s.Result), "ok: add(2, 3) = 5") {
		t.Fatalf("result %s", s.Result)
	}
	if _, err := os.Stat(filepath.Join(ws, "PUBLISHED")); err != nil {
		t.Fatal("not published after the approval")
	}
}

func dump(t *testing.T, cl *client.Client, id string) {
	h, _ := cl.History(context.Background(), id, 0)
	for _, e := range h {
		b, _ := json.Marshal(e)
		t.Log(string(b)[:min(len(b), 400)])
	}
}
