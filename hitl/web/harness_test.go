package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/hitl/web"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/notify"
	"github.com/polos-run/polos/notify/slackfake"
)

const execStep = "approve_exec_1"

var secret = []byte(strings.Repeat("s3cr3t-", 6))

// guardedExec is the shape of the agent loop's exec guard: suspend with an
// exec approval form, then run or return the rejection to the agent.
func guardedExec(ctx polos.Context, cmd string, opts ...polos.SuspendOption) (json.RawMessage, error) {
	raw, err := ctx.Suspend(execStep, hitl.ExecApproval(cmd, "/workspace", map[string]string{"CI": "1"}), opts...)
	d, err := hitl.DecisionFromResume(raw, err)
	if err != nil {
		return nil, err
	}
	if !d.Approved {
		return json.Marshal(hitl.RejectedExecResult(cmd, d.Feedback))
	}
	return json.Marshal(map[string]any{"ran": cmd, "allow_always": d.AllowAlways, "pattern": d.Pattern})
}

// grantedExec is guardedExec with allow-always grants, as the agent loop
// does it: a matching grant skips the suspend; an allow_always approval
// records a grant (KV) and a "grant" annotation in the run.
func grantedExec(ctx polos.Context, js jetstream.JetStream, cmd string) (json.RawMessage, error) {
	scopes := hitl.Scopes{Session: ctx.Session(), Agent: ctx.Workflow()}
	granted, err := polos.Step(ctx, "check-grant", func(c context.Context, _ string) (string, error) {
		gs, err := hitl.NewGrants(c, js, ctx.Namespace())
		if err != nil {
			return "", err
		}
		g, ok, err := gs.Match(c, scopes, hitl.KindExec, cmd)
		if err != nil || !ok {
			return "", err
		}
		return g.ID, nil
	})
	if err != nil {
		return nil, err
	}
	if granted != "" {
		return json.Marshal(map[string]any{"ran": cmd, "grant": granted})
	}
	payload := hitl.ExecApproval(cmd, "/workspace", nil)
	raw, err := ctx.Suspend(execStep, payload)
	d, err := hitl.DecisionFromResume(raw, err)
	if err != nil {
		return nil, err
	}
	if !d.Approved {
		return json.Marshal(hitl.RejectedExecResult(cmd, d.Feedback))
	}
	if d.AllowAlways {
		g, err := polos.Step(ctx, "record-grant", func(c context.Context, _ string) (*hitl.Grant, error) {
			g, err := hitl.GrantFromDecision(payload, d, scopes, ctx.RunID(), execStep, "web", ctx.Now())
			if err != nil || g == nil {
				return g, err
			}
			gs, err := hitl.NewGrants(c, js, ctx.Namespace())
			if err != nil {
				return nil, err
			}
			return g, gs.Record(c, g)
		})
		if err != nil {
			return nil, err
		}
		if err := ctx.Annotate("grant", hitl.GrantAttrs(g)); err != nil {
			return nil, err
		}
	}
	return json.Marshal(map[string]any{"ran": cmd})
}

type env struct {
	t     *testing.T
	srv   *testutil.Server
	cl    *client.Client
	web   *httptest.Server
	slack *slackfake.Server
	sl    *notify.Slack

	mu      sync.Mutex
	decided []string // OnDecided calls: run/step/decided_by
}

func (e *env) decidedCalls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.decided...)
}

const slackSigning = "slack-signing-secret"

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, srv: testutil.StartServer(t)}
	reg := polos.NewRegistry()
	polos.RegisterRaw(reg, "guarded-exec", func(ctx polos.Context, in json.RawMessage) (json.RawMessage, error) {
		var cmd string
		_ = json.Unmarshal(in, &cmd)
		return guardedExec(ctx, cmd)
	})
	polos.RegisterRaw(reg, "guarded-exec-1s", func(ctx polos.Context, in json.RawMessage) (json.RawMessage, error) {
		var cmd string
		_ = json.Unmarshal(in, &cmd)
		return guardedExec(ctx, cmd, polos.SuspendTimeout(time.Second))
	})
	polos.RegisterRaw(reg, "granted-exec", func(ctx polos.Context, in json.RawMessage) (json.RawMessage, error) {
		var cmd string
		_ = json.Unmarshal(in, &cmd)
		return grantedExec(ctx, e.srv.JS, cmd)
	})
	polos.Register(reg, "park", func(ctx polos.Context, cmd string) (string, error) {
		if _, err := ctx.Suspend(execStep, hitl.ExecApproval(cmd, "/workspace", nil)); err != nil {
			return "", err
		}
		return "continued", nil
	})
	polos.Register(reg, "ask", func(ctx polos.Context, q string) (json.RawMessage, error) {
		return polos.Suspend[json.RawMessage](ctx, "ask_user_1", hitl.AskUser(q, []hitl.Field{
			{Key: "env", Type: hitl.FieldSelect, Label: "Environment", Required: true, Options: []hitl.Option{{Value: "staging"}, {Value: "prod", Label: "Production"}}},
			{Key: "replicas", Type: hitl.FieldNumber, Label: "Replicas", Required: true},
			{Key: "why", Type: hitl.FieldText, Label: "Why"},
		}))
	})
	cl, err := client.New(e.srv.NC, "default")
	if err != nil {
		t.Fatal(err)
	}
	e.cl = cl
	ex, err := executor.New(e.srv.NC, e.srv.JS, reg, executor.Options{ID: "exec-web"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = ex.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	e.slack = slackfake.New("xoxb-test")
	t.Cleanup(e.slack.Close)
	e.sl = &notify.Slack{Token: "xoxb-test", Channel: e.slack.Channel, BaseURL: e.slack.APIURL(), Backoff: time.Millisecond}
	h, err := web.New(web.Config{Client: cl, Secret: secret, Slack: e.sl, SlackSigningSecret: slackSigning, Logf: t.Logf,
		OnDecided: func(_ context.Context, runID, step string, o notify.Outcome) {
			e.mu.Lock()
			e.decided = append(e.decided, runID+"/"+step+"/"+o.DecidedBy)
			e.mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	e.web = httptest.NewServer(h)
	t.Cleanup(e.web.Close)
	return e
}

func (e *env) start(wf string, in any) string {
	e.t.Helper()
	id, _, err := e.cl.Start(context.Background(), wf, in, client.StartOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	testutil.CheckFor(e.t, 30*time.Second, 20*time.Millisecond, func() error {
		s, err := e.cl.Status(context.Background(), id)
		if err != nil || s.Status != events.StatusWaiting {
			return fmt.Errorf("run %s: %s %v", id, s.Status, err)
		}
		return nil
	})
	return id
}

func (e *env) link(id, step string) (string, string) {
	e.t.Helper()
	u, tok, err := web.IssueLink(secret, e.web.URL, "default", id, step, time.Hour, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return u, tok
}

func (e *env) result(id string) events.Summary {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.cl.Result(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) resumes(id string) []events.Event {
	e.t.Helper()
	hist, err := e.cl.History(context.Background(), id, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []events.Event
	for _, ev := range hist {
		if ev.Type == events.Resumed {
			out = append(out, ev)
		}
	}
	return out
}
