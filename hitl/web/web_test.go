package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/internal/textsafe"
	"github.com/polos-run/polos/notify"
	"github.com/polos-run/polos/notify/slackfake"
	"github.com/polos-run/polos/sandbox"
)

func postJSON(t *testing.T, u, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestJSONDecisionsStringTrueAndReusedToken(t *testing.T) {
	e := newEnv(t)
	id := e.start("guarded-exec", "rm -rf build")
	u, _ := e.link(id, execStep)
	code, out := postJSON(t, u, `{"approved":"true"}`)
	if code != http.StatusUnprocessableEntity || out["code"] != string(hitl.CodeBadType) {
		t.Fatalf("string true: %d %v", code, out)
	}
	if s, _ := e.cl.Status(context.Background(), id); s.Status != events.StatusWaiting || len(e.resumes(id)) != 0 {
		t.Fatalf("refused decision changed the run: %s", s.Status)
	}
	if code, out := postJSON(t, u, `{"feedback":"x"}`); code != http.StatusUnprocessableEntity || out["code"] != string(hitl.CodeMissingField) {
		t.Fatalf("missing approved: %d %v", code, out)
	}
	// A token for another step of the same run, and a forged one.
	other, _ := e.link(id, "approve_exec_2")
	other = strings.Replace(other, "/approve_exec_2?", "/"+execStep+"?", 1)
	if code, out := postJSON(t, other, `{"approved":true}`); code != http.StatusForbidden || out["code"] != string(hitl.CodeBadToken) {
		t.Fatalf("token of another step: %d %v", code, out)
	}
	forged := u[:len(u)-3] + "AAA"
	if code, _ := postJSON(t, forged, `{"approved":true}`); code != http.StatusForbidden {
		t.Fatalf("forged token: %d", code)
	}
	if code, out := postJSON(t, u, `{"approved":false,"feedback":"keep the build dir"}`); code != http.StatusOK || out["ok"] != true {
		t.Fatalf("reject: %d %v", code, out)
	}
	if d := e.decidedCalls(); len(d) != 1 || !strings.HasPrefix(d[0], id+"/"+execStep+"/web:tok_") {
		t.Fatalf("OnDecided: %v", d)
	}
	// The same token again: already decided.
	if code, out := postJSON(t, u, `{"approved":true}`); code != http.StatusConflict || !strings.Contains(out["error"].(string), "already decided by web:tok_") {
		t.Fatalf("reused token: %d %v", code, out)
	}
	s := e.result(id)
	var r sandbox.ExecResult
	if err := json.Unmarshal(s.Result, &r); err != nil {
		t.Fatal(err)
	}
	if r.ExitCode != -1 || r.Stderr != "Command rejected by user: rm -rf build\nUser feedback: keep the build dir" {
		t.Fatalf("agent saw %+v", r)
	}
	rs := e.resumes(id)
	if len(rs) != 1 || !strings.HasPrefix(rs[0].Attr("decided_by"), "web:tok_") || rs[0].Attr("decided_at") == "" {
		t.Fatalf("decision record: %+v", rs)
	}
	// GET after the decision says who decided.
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "Already rejected by web:tok_") {
		t.Fatalf("page after decision: %s", b)
	}
	if resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatal("the page must not leak its token through Referer")
	}
}

func slackClick(t *testing.T, e *env, id, action, user string) map[string]any {
	t.Helper()
	_, tok := e.link(id, execStep)
	p, _, err := hitl.ParsePayload(mustForm(t, e, id))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sl.Notify(context.Background(), notify.Request{Namespace: "default", RunID: id, StepKey: execStep, Payload: p, Token: tok}); err != nil {
		t.Fatal(err)
	}
	posts := e.slack.Calls("chat.postMessage")
	payload, err := e.slack.Click(posts[len(posts)-1], action, user)
	if err != nil {
		t.Fatal(err)
	}
	return payload
}

func mustForm(t *testing.T, e *env, id string) json.RawMessage {
	s, err := e.cl.Status(context.Background(), id)
	if err != nil || len(s.Waiting) != 1 {
		t.Fatalf("waiting: %+v %v", s.Waiting, err)
	}
	return s.Waiting[0].Form
}

func TestSlackInteractions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	endpoint := e.web.URL + "/slack/interactions"
	id := e.start("guarded-exec", "make deploy")
	payload := slackClick(t, e, id, notify.SlackActionApprove, "U0ALICE")

	// Bad signature and an old timestamp are refused before anything else.
	if code, _, _ := slackfake.Interact(ctx, endpoint, payload, slackfake.Delivery{SigningSecret: "wrong"}); code != http.StatusUnauthorized {
		t.Fatalf("bad signature: %d", code)
	}
	if code, _, _ := slackfake.Interact(ctx, endpoint, payload, slackfake.Delivery{SigningSecret: slackSigning, Timestamp: time.Now().Add(-6 * time.Minute)}); code != http.StatusUnauthorized {
		t.Fatalf("old timestamp: %d", code)
	}
	if n := len(e.resumes(id)); n != 0 {
		t.Fatalf("refused requests decided: %d", n)
	}
	// Valid: approves, records the Slack user, updates the message.
	if code, body, err := slackfake.Interact(ctx, endpoint, payload, slackfake.Delivery{SigningSecret: slackSigning}); err != nil || code != http.StatusOK {
		t.Fatalf("valid: %d %s %v", code, body, err)
	}
	s := e.result(id)
	if !strings.Contains(string(s.Result), `"ran":"make deploy"`) {
		t.Fatalf("result %s", s.Result)
	}
	// Slack retries the same action: acknowledged, not applied again.
	if code, _, _ := slackfake.Interact(ctx, endpoint, payload, slackfake.Delivery{SigningSecret: slackSigning, RetryNum: 1}); code != http.StatusOK {
		t.Fatalf("retry: %d", code)
	}
	rs := e.resumes(id)
	if len(rs) != 1 || rs[0].Attr("decided_by") != "slack:U0ALICE" {
		t.Fatalf("resumes after retry: %+v", rs)
	}
	if d := e.decidedCalls(); len(d) != 1 || d[0] != id+"/"+execStep+"/slack:U0ALICE" {
		t.Fatalf("OnDecided: %v", d)
	}
	ups := e.slack.Calls("chat.update")
	if len(ups) != 1 || !strings.Contains(ups[0].Body["text"].(string), "Approved by slack:U0ALICE") {
		t.Fatalf("chat.update: %+v", ups)
	}

	// Reject via Slack on another run; a forged token in the button value is refused.
	id2 := e.start("guarded-exec", "curl x | sh")
	rej := slackClick(t, e, id2, notify.SlackActionReject, "U0BOB")
	forged := slackClick(t, e, id2, notify.SlackActionApprove, "U0EVE")
	act := forged["actions"].([]any)[0].(map[string]any)
	var v notify.SlackAction
	_ = json.Unmarshal([]byte(act["value"].(string)), &v)
	v.Token = v.Token[:len(v.Token)-4] + "AAAA"
	vb, _ := json.Marshal(v)
	act["value"] = string(vb)
	if code, _, _ := slackfake.Interact(ctx, endpoint, forged, slackfake.Delivery{SigningSecret: slackSigning}); code != http.StatusForbidden {
		t.Fatalf("forged token in button: %d", code)
	}
	if code, _, _ := slackfake.Interact(ctx, endpoint, rej, slackfake.Delivery{SigningSecret: slackSigning}); code != http.StatusOK {
		t.Fatalf("reject: %d", code)
	}
	var r sandbox.ExecResult
	_ = json.Unmarshal(e.result(id2).Result, &r)
	if r.ExitCode != -1 || r.Stderr != "Command rejected by user: curl x | sh" {
		t.Fatalf("agent saw %+v", r)
	}
}

func TestTimeoutIsARejectionWithFeedback(t *testing.T) {
	e := newEnv(t)
	id := e.start("guarded-exec-1s", "terraform apply")
	u, _ := e.link(id, execStep)
	var r sandbox.ExecResult
	_ = json.Unmarshal(e.result(id).Result, &r)
	if r.ExitCode != -1 || r.Stderr != "Command rejected by user: terraform apply\nUser feedback: "+hitl.TimeoutFeedback {
		t.Fatalf("agent saw %+v", r)
	}
	if code, out := postJSON(t, u, `{"approved":true}`); code != http.StatusConflict {
		t.Fatalf("decision after timeout: %d %v", code, out)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "Timed out at") {
		t.Fatalf("page after timeout: %s", b)
	}
}

func TestAllowAlwaysThenTheSameCommandRunsWithoutSuspend(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	startIn := func(cmd, session string) string {
		id, _, err := e.cl.Start(ctx, "granted-exec", cmd, client.StartOptions{Session: session})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	waiting := func(id string) {
		testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			s, err := e.cl.Status(ctx, id)
			if err != nil || s.Status != events.StatusWaiting {
				return fmt.Errorf("%s %v", s.Status, err)
			}
			return nil
		})
	}
	id := startIn("npm install chalk", "sess-1")
	waiting(id)
	u, _ := e.link(id, execStep)
	if code, out := postJSON(t, u, `{"approved":true,"allow_always":true}`); code != 200 {
		t.Fatalf("%d %v", code, out)
	}
	e.result(id)
	hist, _ := e.cl.History(ctx, id, 0)
	var grantID string
	for _, ev := range hist {
		if ev.Type == events.Annotation && ev.Name == "grant" {
			grantID = ev.Attr("grant_id")
			if ev.Attr("pattern") != "npm install chalk" || ev.Attr("exact_only") != "true" {
				t.Fatalf("grant event %+v", ev.Attrs)
			}
		}
	}
	if grantID == "" {
		t.Fatal("no grant event in the run's history")
	}
	// Same command, same session: runs without asking.
	id2 := startIn("npm install chalk", "sess-1")
	if s := e.result(id2); !strings.Contains(string(s.Result), grantID) {
		t.Fatalf("not granted: %s", s.Result)
	}
	hist, _ = e.cl.History(ctx, id2, 0)
	for _, ev := range hist {
		if ev.Type == events.Suspended {
			t.Fatal("a granted command suspended")
		}
	}
	// Not wider than approved: another package, or another session, asks.
	waiting(startIn("npm install lodash", "sess-1"))
	waiting(startIn("npm install chalk", "sess-2"))
}

func TestConcurrentPageDecisionsExactlyOneWins(t *testing.T) {
	e := newEnv(t)
	id := e.start("guarded-exec", "make release")
	u, _ := e.link(id, execStep)
	codes := make(chan int, 8)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, err := http.Post(u, "application/json; charset=utf-8", strings.NewReader(fmt.Sprintf(`{"approved":%v}`, i%2 == 0)))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}(i)
	}
	wg.Wait()
	close(codes)
	won := 0
	for c := range codes {
		switch c {
		case http.StatusOK:
			won++
		case http.StatusConflict:
		default:
			t.Errorf("status %d", c)
		}
	}
	if won != 1 || len(e.resumes(id)) != 1 {
		t.Fatalf("%d decisions won, %d recorded", won, len(e.resumes(id)))
	}
	e.result(id)
}

func TestTimeoutFiresAcrossServerRestart(t *testing.T) {
	reg := polos.NewRegistry()
	polos.RegisterRaw(reg, "guarded-exec-5s", func(ctx polos.Context, in json.RawMessage) (json.RawMessage, error) {
		var cmd string
		_ = json.Unmarshal(in, &cmd)
		return guardedExec(ctx, cmd, polos.SuspendTimeout(5*time.Second))
	})
	srv := testutil.StartServer(t)
	startExec := func(srv *testutil.Server) func() {
		ex, err := executor.New(srv.NC, srv.JS, reg, executor.Options{ID: "exec-restart"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = ex.Run(ctx) }()
		return func() { cancel(); <-done }
	}
	stop := startExec(srv)
	cl, _ := client.New(srv.NC, "default")
	id, _, err := cl.Start(context.Background(), "guarded-exec-5s", "terraform destroy", client.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		s, err := cl.Status(context.Background(), id)
		if err != nil || s.Status != events.StatusWaiting {
			return fmt.Errorf("%s %v", s.Status, err)
		}
		return nil
	})
	st, _ := cl.Status(context.Background(), id)
	timeoutAt, err := time.Parse(time.RFC3339Nano, st.Waiting[0].TimeoutAt)
	if err != nil {
		t.Fatalf("timeout_at %q: %v", st.Waiting[0].TimeoutAt, err)
	}
	// polosd goes down while the approval waits; it comes back on the same store.
	stop()
	dir := srv.Dir
	srv.Stop()
	srv = testutil.StartServerIn(t, dir)
	defer startExec(srv)()
	if time.Now().After(timeoutAt) {
		t.Fatalf("the restart took past the timeout (%s): the test proves nothing; raise the timeout", timeoutAt)
	}
	cl, _ = client.New(srv.NC, "default")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := cl.Result(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var r sandbox.ExecResult
	_ = json.Unmarshal(s.Result, &r)
	if r.ExitCode != -1 || r.Stderr != "Command rejected by user: terraform destroy\nUser feedback: "+hitl.TimeoutFeedback {
		t.Fatalf("agent saw %+v", r)
	}
}

func TestPageEscapesHostileContext(t *testing.T) {
	e := newEnv(t)
	cmd := `echo "</pre><script>alert(1)</script>" $(id) ` + "`whoami`"
	id := e.start("guarded-exec", cmd)
	u, _ := e.link(id, execStep)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	if strings.Contains(page, "<script>") || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Fatalf("hostile command not escaped:\n%s", page)
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatal("no CSP")
	}
}

// hostileCommand hides part of itself from a person reading it: bidi
// overrides reverse text, ESC sequences erase and rewrite, zero-width
// characters vanish.
const hostileCommand = "echo safe \u202e; rm -rf ~ #\x1b[2K\rls \u2066x\u2069\u200b"

// TestPageShowsControlCharactersEscaped: on top of HTML escaping, the page
// shows control, bidi and invisible characters as visible escapes.
func TestPageShowsControlCharactersEscaped(t *testing.T) {
	e := newEnv(t)
	id := e.start("guarded-exec", hostileCommand)
	u, _ := e.link(id, execStep)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	for _, r := range page {
		if r != '\n' && textsafe.Unsafe(r) {
			t.Fatalf("page holds a raw %U:\n%s", r, page)
		}
	}
	if want := `echo safe \u{202e}; rm -rf ~ #\u{1b}[2K\u{d}ls \u{2066}x\u{2069}\u{200b}`; !strings.Contains(page, want) {
		t.Fatalf("page does not show %q:\n%s", want, page)
	}
}
