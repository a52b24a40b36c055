package notify_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/notify"
	"github.com/polos-run/polos/notify/slackfake"
	"github.com/polos-run/polos/perr"
)

var _ notify.Channel = (*notify.Webhook)(nil)
var _ notify.Channel = (*notify.Slack)(nil)

func execRequest() notify.Request {
	return notify.Request{Namespace: "default", RunID: "run_1", StepKey: "approve_exec_1", Agent: "coder",
		Payload: hitl.ExecApproval("npm install <chalk> && echo ```", "/w", map[string]string{"CI": "1"}), ApprovalURL: "http://polos.local/approve/run_1/approve_exec_1?token=t", Token: "v1.x.y"}
}

func TestWebhookSignsAndRetries5xx(t *testing.T) {
	secret := []byte("whsec")
	var mu sync.Mutex
	var bodies []notify.WebhookBody
	status := []int{503, 502, 200, 200}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.VerifyWebhook(secret, r.Header.Get(notify.SignatureHeader), body, time.Now(), 0); err != nil {
			t.Errorf("signature: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		var b notify.WebhookBody
		_ = json.Unmarshal(body, &b)
		bodies = append(bodies, b)
		code := status[0]
		status = status[1:]
		w.WriteHeader(code)
	}))
	defer srv.Close()
	wh := &notify.Webhook{URL: srv.URL, Secret: secret, Backoff: time.Millisecond}
	ref, err := wh.Notify(context.Background(), execRequest())
	if err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 3 || bodies[2].Type != notify.WebhookRequested || bodies[2].Request.RunID != "run_1" {
		t.Fatalf("deliveries: %+v", bodies)
	}
	if raw, _ := json.Marshal(bodies[2]); strings.Contains(string(raw), "v1.x.y") {
		t.Fatal("the approval token leaked into the webhook body outside the URL")
	}
	if err := wh.Update(context.Background(), ref, notify.Outcome{Approved: true, DecidedBy: "web:tok", DecidedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if bodies[3].Type != notify.WebhookDecided || !bodies[3].Outcome.Approved {
		t.Fatalf("update: %+v", bodies[3])
	}
}

func TestWebhook4xxIsFinalAnd5xxGivesUp(t *testing.T) {
	var n int
	var mu sync.Mutex
	code := 400
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		w.WriteHeader(code)
	}))
	defer srv.Close()
	wh := &notify.Webhook{URL: srv.URL, Secret: []byte("s"), Backoff: time.Millisecond, Attempts: 3}
	if _, err := wh.Notify(context.Background(), execRequest()); perr.CodeOf(err) != notify.CodeDelivery || n != 1 {
		t.Fatalf("400: %d attempts, %v", n, err)
	}
	code, n = 500, 0
	if _, err := wh.Notify(context.Background(), execRequest()); perr.CodeOf(err) != notify.CodeDelivery || n != 3 {
		t.Fatalf("500: %d attempts, %v", n, err)
	}
}

func TestVerifyWebhookRefusesTamperingAndReplays(t *testing.T) {
	secret, body, now := []byte("s"), []byte(`{"a":1}`), time.Now()
	h := notify.SignWebhook(secret, now, body)
	if err := notify.VerifyWebhook(secret, h, body, now, 0); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		h    string
		body string
		at   time.Time
	}{
		"tampered body": {h, `{"a":2}`, now},
		"other secret":  {notify.SignWebhook([]byte("x"), now, body), string(body), now},
		"old":           {h, string(body), now.Add(10 * time.Minute)},
		"garbage":       {"t=abc,v1=zz", string(body), now},
		"empty":         {"", string(body), now},
	} {
		if err := notify.VerifyWebhook(secret, c.h, []byte(c.body), c.at, 0); perr.CodeOf(err) != notify.CodeSignature {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSlackPostsButtonsForBooleanApprovalsAndUpdates(t *testing.T) {
	fake := slackfake.New("xoxb-test")
	defer fake.Close()
	fake.FailNext(1) // one 503 first: retried
	sl := &notify.Slack{Token: "xoxb-test", Channel: "C0POLOS", BaseURL: fake.APIURL(), Backoff: time.Millisecond}
	ctx := context.Background()
	ref, err := sl.Notify(ctx, execRequest())
	if err != nil {
		t.Fatal(err)
	}
	posts := fake.Calls("chat.postMessage")
	if len(posts) != 1 || ref.ID != posts[0].TS || ref.Target != fake.Channel {
		t.Fatalf("posts %+v ref %+v", posts, ref)
	}
	approve, ok := posts[0].Button(notify.SlackActionApprove)
	if !ok {
		t.Fatal("no Approve button")
	}
	var v notify.SlackAction
	if err := json.Unmarshal([]byte(approve["value"].(string)), &v); err != nil || v.RunID != "run_1" || v.StepKey != "approve_exec_1" || v.Token != "v1.x.y" {
		t.Fatalf("button value %+v %v", v, err)
	}
	if _, ok := posts[0].Button(notify.SlackActionReject); !ok {
		t.Fatal("no Reject button")
	}
	raw, _ := json.Marshal(posts[0].Body["blocks"])
	if !strings.Contains(string(raw), `npm install \u0026lt;chalk\u0026gt;`) || strings.Contains(string(raw), "echo ```") {
		t.Fatalf("context not escaped: %s", raw)
	}
	// ask_user: only a link.
	ask := execRequest()
	ask.Payload = hitl.AskUser("Which branch?", nil)
	if _, err := sl.Notify(ctx, ask); err != nil {
		t.Fatal(err)
	}
	q := fake.Calls("chat.postMessage")[1]
	if _, ok := q.Button(notify.SlackActionApprove); ok {
		t.Fatal("ask_user got an Approve button")
	}
	if b, ok := q.Button(notify.SlackActionOpen); !ok || b["url"] != ask.ApprovalURL {
		t.Fatalf("ask_user link: %+v", b)
	}
	if err := sl.Update(ctx, ref, notify.Outcome{Approved: false, Feedback: "use yarn", DecidedBy: "slack:U1", DecidedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	up := fake.Calls("chat.update")
	if len(up) != 1 || up[0].TS != ref.ID || !strings.Contains(up[0].Body["text"].(string), "Rejected by slack:U1") {
		t.Fatalf("update: %+v", up)
	}
	bad := &notify.Slack{Token: "xoxb-wrong", Channel: "C0POLOS", BaseURL: fake.APIURL()}
	if _, err := bad.Notify(ctx, execRequest()); perr.CodeOf(err) != notify.CodeDelivery || !strings.Contains(err.Error(), "invalid_auth") {
		t.Fatalf("bad token: %v", err)
	}
}

func TestSlackSignatureKnownAnswer(t *testing.T) {
	// The worked example of Slack's "Verifying requests from Slack" guide.
	body := "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
	want := "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
	if got := notify.SignSlack("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", []byte(body)); got != want {
		t.Fatalf("got %s", got)
	}
	h := http.Header{}
	h.Set("X-Slack-Request-Timestamp", "1531420618")
	h.Set("X-Slack-Signature", want)
	at := time.Unix(1531420618, 0)
	if err := notify.VerifySlack("8f742231b10e8888abcd99yyyzzz85a5", h, []byte(body), at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := notify.VerifySlack("8f742231b10e8888abcd99yyyzzz85a5", h, []byte(body), at.Add(6*time.Minute)); perr.CodeOf(err) != notify.CodeSignature {
		t.Fatalf("old timestamp: %v", err)
	}
	if err := notify.VerifySlack("8f742231b10e8888abcd99yyyzzz85a5", h, []byte(body+"x"), at); perr.CodeOf(err) != notify.CodeSignature {
		t.Fatalf("tampered: %v", err)
	}
	if err := notify.VerifySlack("", h, []byte(body), at); perr.CodeOf(err) != notify.CodeSignature {
		t.Fatalf("no secret configured must refuse: %v", err)
	}
}
