package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/polos-run/polos/perr"
)

// Slack defaults.
const (
	DefaultSlackBaseURL = "https://slack.com/api"
	// SlackMaxAge is how old a signed Slack request may be (Slack's advice).
	SlackMaxAge = 5 * time.Minute
	// Action IDs of the one-click buttons.
	SlackActionApprove = "polos_approve"
	SlackActionReject  = "polos_reject"
	SlackActionOpen    = "polos_open"
	slackTextLimit     = 2900 // section text limit is 3000
)

// Slack posts approval requests with chat.postMessage and marks them
// decided with chat.update. Boolean approvals get Approve / Reject buttons
// (their value carries run, step and approval token) plus a link to the
// page; other forms get only the link. BaseURL is configurable so tests
// can point it at notify/slackfake.
type Slack struct {
	Token    string // bot token (xoxb-...)
	Channel  string // channel ID to post to
	BaseURL  string // default DefaultSlackBaseURL
	Client   *http.Client
	Attempts int           // on 5xx / network errors / ratelimited; default DefaultWebhookAttempts
	Backoff  time.Duration // default DefaultWebhookBackoff
}

// SlackAction is the value of an Approve / Reject button.
type SlackAction struct {
	Namespace string `json:"ns"`
	RunID     string `json:"run"`
	StepKey   string `json:"step"`
	Token     string `json:"token"`
}

// Notify posts the request.
func (s *Slack) Notify(ctx context.Context, r Request) (Ref, error) {
	blocks := slackRequestBlocks(r)
	var resp struct {
		Channel string `json:"channel"`
		TS      string `json:"ts"`
	}
	if err := s.call(ctx, "chat.postMessage", map[string]any{"channel": s.Channel, "text": r.Payload.Form.Title, "blocks": blocks}, &resp); err != nil {
		return Ref{}, err
	}
	return Ref{Channel: "slack", Target: resp.Channel, ID: resp.TS}, nil
}

// Update replaces the message's buttons with the outcome.
func (s *Slack) Update(ctx context.Context, ref Ref, o Outcome) error {
	return s.UpdateMessage(ctx, ref, "", o)
}

// UpdateMessage is Update with the original title (when the caller knows it).
func (s *Slack) UpdateMessage(ctx context.Context, ref Ref, title string, o Outcome) error {
	icon := ":x:"
	switch {
	case o.TimedOut:
		icon = ":hourglass:"
	case o.Approved:
		icon = ":white_check_mark:"
	}
	text := icon + " " + slackEscape(o.Summary())
	if title != "" {
		text = "*" + slackEscape(title) + "*\n" + text
	}
	blocks := []map[string]any{section(text)}
	return s.call(ctx, "chat.update", map[string]any{"channel": ref.Target, "ts": ref.ID, "text": o.Summary(), "blocks": blocks}, nil)
}

func (s *Slack) call(ctx context.Context, method string, body any, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return perr.Wrap(err, CodeDelivery, "", "cannot encode Slack %s", method)
	}
	base := s.BaseURL
	if base == "" {
		base = DefaultSlackBaseURL
	}
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	attempts, backoff := s.Attempts, s.Backoff
	if attempts <= 0 {
		attempts = DefaultWebhookAttempts
	}
	if backoff <= 0 {
		backoff = DefaultWebhookBackoff
	}
	return retry(ctx, attempts, backoff, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+"/"+method, bytes.NewReader(b))
		if err != nil {
			return perr.Wrap(err, CodeDelivery, "check the Slack base URL", "bad Slack URL")
		}
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("Authorization", "Bearer "+s.Token)
		resp, err := client.Do(req)
		if err != nil {
			return retryable{perr.Wrap(err, CodeDelivery, "check the network", "Slack %s unreachable", method)}
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return retryable{perr.New(CodeDelivery, "retry later", "Slack %s answered %s", method, resp.Status)}
		}
		var env struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(raw, &env); err != nil {
			return perr.Wrap(err, CodeDelivery, "check the Slack base URL", "Slack %s answered %s with a non-JSON body", method, resp.Status)
		}
		if !env.OK {
			return perr.New(CodeDelivery, "check the bot token, its scopes (chat:write) and the channel", "Slack %s failed: %s", method, env.Error)
		}
		if out != nil {
			return json.Unmarshal(raw, out)
		}
		return nil
	})
}

func section(mrkdwn string) map[string]any {
	if len(mrkdwn) > slackTextLimit {
		mrkdwn = mrkdwn[:slackTextLimit] + "…"
	}
	return map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": mrkdwn}}
}

// slackRequestBlocks renders a request as Block Kit.
func slackRequestBlocks(r Request) []map[string]any {
	f := r.Payload.Form
	head := "*" + slackEscape(f.Title) + "*"
	if f.Description != "" {
		head += "\n" + slackEscape(f.Description)
	}
	if r.Agent != "" {
		head += "\n_agent " + slackEscape(r.Agent) + " · run " + slackEscape(r.RunID) + "_"
	}
	blocks := []map[string]any{section(head)}
	if ctx := slackContext(f.Context); ctx != "" {
		blocks = append(blocks, section(ctx))
	}
	if r.TimeoutAt != "" {
		blocks = append(blocks, map[string]any{"type": "context", "elements": []any{map[string]any{"type": "mrkdwn", "text": "Times out at " + slackEscape(r.TimeoutAt)}}})
	}
	var buttons []any
	if f.IsBooleanApproval() && r.Token != "" {
		v, _ := json.Marshal(SlackAction{Namespace: r.Namespace, RunID: r.RunID, StepKey: r.StepKey, Token: r.Token})
		buttons = append(buttons,
			map[string]any{"type": "button", "action_id": SlackActionApprove, "style": "primary", "value": string(v), "text": map[string]any{"type": "plain_text", "text": "Approve"}},
			map[string]any{"type": "button", "action_id": SlackActionReject, "style": "danger", "value": string(v), "text": map[string]any{"type": "plain_text", "text": "Reject"}})
	}
	if r.ApprovalURL != "" {
		label := "Open approval page"
		if len(buttons) == 0 {
			label = "Answer"
		}
		buttons = append(buttons, map[string]any{"type": "button", "action_id": SlackActionOpen, "url": r.ApprovalURL, "text": map[string]any{"type": "plain_text", "text": label}})
	}
	if len(buttons) > 0 {
		blocks = append(blocks, map[string]any{"type": "actions", "block_id": "polos_decide", "elements": buttons})
	}
	return blocks
}

// slackContext shows the form's context: strings in code spans/blocks,
// anything else as JSON, keys sorted.
func slackContext(ctx map[string]any) string {
	keys := make([]string, 0, len(ctx))
	for k := range ctx {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		v := ctx[k]
		s, ok := v.(string)
		if !ok {
			j, _ := json.MarshalIndent(v, "", "  ")
			s = string(j)
		}
		s = strings.ReplaceAll(slackEscape(s), "```", "` ` `")
		fmt.Fprintf(&b, "*%s*\n```%s```\n", slackEscape(k), s)
	}
	return strings.TrimSpace(b.String())
}

// slackEscape escapes the three characters Slack's mrkdwn treats as control.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// SignSlack computes Slack's request signature: "v0=" + hex HMAC-SHA256 of
// "v0:<timestamp>:<body>" with the signing secret.
func SignSlack(signingSecret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(signingSecret))
	m.Write([]byte("v0:" + timestamp + ":"))
	m.Write(body)
	return "v0=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySlack checks X-Slack-Signature and X-Slack-Request-Timestamp:
// the signature must match and the timestamp be at most SlackMaxAge away
// from now (older requests are replays).
func VerifySlack(signingSecret string, h http.Header, body []byte, now time.Time) error {
	ts := h.Get("X-Slack-Request-Timestamp")
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return perr.New(CodeSignature, "requests must come from Slack", "missing or bad X-Slack-Request-Timestamp")
	}
	if d := now.Sub(time.Unix(unix, 0)); d > SlackMaxAge || d < -SlackMaxAge {
		return perr.New(CodeSignature, "check the server clock; old requests are refused as replays", "the Slack request timestamp is %s away from now (at most %s)", d.Round(time.Second), SlackMaxAge)
	}
	if signingSecret == "" || !hmac.Equal([]byte(h.Get("X-Slack-Signature")), []byte(SignSlack(signingSecret, ts, body))) {
		return perr.New(CodeSignature, "check the Slack signing secret", "the X-Slack-Signature header does not match the request")
	}
	return nil
}
