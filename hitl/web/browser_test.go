package web_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/polos-run/polos/sandbox"
)

// browser starts headless Chromium (Debian's package). Missing Chromium
// fails the test unless POLOS_SKIP_BROWSER=1.
func browser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("POLOS_SKIP_BROWSER") == "1" {
			t.Skip("POLOS_SKIP_BROWSER=1 and no chromium installed")
		}
		t.Fatal("chromium not found: `apt-get install -y chromium` (or set POLOS_SKIP_BROWSER=1 to skip browser tests)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	ctx, cancelC := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelC(); cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // launch now, fail clearly
		t.Fatalf("cannot start %s: %v", path, err)
	}
	return ctx
}

func text(ctx context.Context, t *testing.T, sel string) string {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#"+sel))); err != nil {
		t.Fatalf("waiting for %s: %v", sel, err)
	}
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#"+sel)))
	if err != nil {
		t.Fatalf("reading %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func TestApprovalPageInChromium(t *testing.T) {
	e := newEnv(t)
	ctx := browser(t)

	// Reject with feedback: the agent sees the feedback.
	id := e.start("guarded-exec", "npm install chalk")
	u, _ := e.link(id, execStep)
	if err := chromedp.Do(ctx, chromedp.Navigate(u)); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "title"); got != "Run this command?" {
		t.Fatalf("title %q", got)
	}
	if got := text(ctx, t, "ctx-command"); got != "npm install chalk" {
		t.Fatalf("command %q", got)
	}
	if got := text(ctx, t, "ctx-cwd"); got != "/workspace" {
		t.Fatalf("cwd %q", got)
	}
	if got := text(ctx, t, "ctx-env"); !strings.Contains(got, `"CI": "1"`) {
		t.Fatalf("env %q", got)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#f-feedback"), "use pnpm instead"),
		chromedp.Click(chromedp.CSS("#reject"))); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "status"); got != "Rejected" {
		t.Fatalf("after reject: %q", got)
	}
	var r sandbox.ExecResult
	_ = json.Unmarshal(e.result(id).Result, &r)
	if r.ExitCode != -1 || r.Stderr != "Command rejected by user: npm install chalk\nUser feedback: use pnpm instead" {
		t.Fatalf("agent saw %+v", r)
	}
	// The same link afterwards: already decided, by whom and when.
	if err := chromedp.Do(ctx, chromedp.Navigate(u)); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "status"); got != "Already decided" {
		t.Fatalf("revisit: %q", got)
	}
	if got := text(ctx, t, "detail"); !strings.Contains(got, "Already rejected by web:tok_") || !strings.Contains(got, " at 20") {
		t.Fatalf("revisit detail: %q", got)
	}
	// A forged link.
	if err := chromedp.Do(ctx, chromedp.Navigate(u[:len(u)-4]+"AAAA")); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "status"); got != "Invalid or expired link" {
		t.Fatalf("forged: %q", got)
	}

	// Approve with allow_always and a chosen pattern.
	id = e.start("guarded-exec", "go test ./...")
	u, _ = e.link(id, execStep)
	if err := chromedp.Do(ctx, chromedp.Navigate(u),
		chromedp.WaitVisible(chromedp.CSS("#approve")),
		chromedp.Click(chromedp.CSS("#f-allow_always")),
		chromedp.SendKeys(chromedp.CSS("#f-pattern"), "go test *"),
		chromedp.SetValue(chromedp.CSS("#f-scope"), "agent"),
		chromedp.Click(chromedp.CSS("#approve"))); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "status"); got != "Approved" {
		t.Fatalf("after approve: %q", got)
	}
	if s := e.result(id); string(s.Result) != `{"allow_always":true,"pattern":"go test *","ran":"go test ./..."}` {
		t.Fatalf("result %s", s.Result)
	}
	rs := e.resumes(id)
	var data map[string]any
	_ = json.Unmarshal(rs[0].Data, &data)
	if data["approved"] != true || data["allow_always"] != true || data["scope"] != "agent" {
		t.Fatalf("recorded decision %v", data)
	}

	// ask_user: typed fields, server-side validation shown on the page.
	id = e.start("ask", "Where should I deploy?")
	u, _ = e.link(id, "ask_user_1")
	if err := chromedp.Do(ctx, chromedp.Navigate(u)); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "description"); got != "Where should I deploy?" {
		t.Fatalf("question %q", got)
	}
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#f-env"), "prod"),
		chromedp.SendKeys(chromedp.CSS("#f-replicas"), "3"),
		chromedp.SendKeys(chromedp.CSS("#f-why"), "release day"),
		chromedp.Click(chromedp.CSS("#submit"))); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "status"); got != "Answer sent" {
		t.Fatalf("after answer: %q", got)
	}
	if s := e.result(id); string(s.Result) != `{"env":"prod","replicas":3,"why":"release day"}` {
		t.Fatalf("answer the agent got: %s", s.Result)
	}
}

// TestHostileCommandVisibleInChromium: what the browser renders of a
// command with bidi and control characters is their visible escapes.
func TestHostileCommandVisibleInChromium(t *testing.T) {
	e := newEnv(t)
	ctx := browser(t)
	id := e.start("guarded-exec", hostileCommand)
	u, _ := e.link(id, execStep)
	if err := chromedp.Do(ctx, chromedp.Navigate(u)); err != nil {
		t.Fatal(err)
	}
	if got, want := text(ctx, t, "ctx-command"), `echo safe \u{202e}; rm -rf ~ #\u{1b}[2K\u{d}ls \u{2066}x\u{2069}\u{200b}`; got != want {
		t.Fatalf("command shown as %q, want %q", got, want)
	}
}
