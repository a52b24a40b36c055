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
	"strconv"
	"strings"
	"time"

	"github.com/polos-run/polos/perr"
)

// Webhook defaults.
const (
	DefaultWebhookAttempts = 4
	DefaultWebhookBackoff  = 500 * time.Millisecond
	DefaultHTTPTimeout     = 10 * time.Second
	// SignatureHeader carries "t=<unix>,v1=<hex HMAC-SHA256(secret, t + "." + body)>".
	SignatureHeader = "X-Polos-Signature"
	// DefaultSignatureTolerance is how old a signed webhook may be.
	DefaultSignatureTolerance = 5 * time.Minute
)

// Webhook event types.
const (
	WebhookRequested = "approval.requested"
	WebhookDecided   = "approval.decided"
)

// WebhookBody is what a webhook receives.
type WebhookBody struct {
	Type    string   `json:"type"`
	Request *Request `json:"request,omitempty"`
	Ref     *Ref     `json:"ref,omitempty"`
	Outcome *Outcome `json:"outcome,omitempty"`
}

// Webhook POSTs signed JSON to URL. A 5xx answer or a network error is
// retried with exponential backoff (Attempts times in all); a 4xx is final.
type Webhook struct {
	URL      string
	Secret   []byte
	Client   *http.Client  // default: DefaultHTTPTimeout
	Attempts int           // default DefaultWebhookAttempts
	Backoff  time.Duration // first wait; default DefaultWebhookBackoff
	Now      func() time.Time
}

// Notify sends an approval.requested body. The Ref ID is "<run>/<step>".
func (w *Webhook) Notify(ctx context.Context, r Request) (Ref, error) {
	ref := Ref{Channel: "webhook", Target: w.URL, ID: r.RunID + "/" + r.StepKey}
	return ref, w.send(ctx, WebhookBody{Type: WebhookRequested, Request: &r, Ref: &ref})
}

// Update sends an approval.decided body.
func (w *Webhook) Update(ctx context.Context, ref Ref, o Outcome) error {
	return w.send(ctx, WebhookBody{Type: WebhookDecided, Ref: &ref, Outcome: &o})
}

func (w *Webhook) send(ctx context.Context, b WebhookBody) error {
	body, err := json.Marshal(b)
	if err != nil {
		return perr.Wrap(err, CodeDelivery, "", "cannot encode webhook body")
	}
	client := w.Client
	if client == nil {
		client = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	attempts, backoff := w.Attempts, w.Backoff
	if attempts <= 0 {
		attempts = DefaultWebhookAttempts
	}
	if backoff <= 0 {
		backoff = DefaultWebhookBackoff
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	return retry(ctx, attempts, backoff, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
		if err != nil {
			return perr.Wrap(err, CodeDelivery, "check the webhook URL", "bad webhook URL %q", w.URL)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(SignatureHeader, SignWebhook(w.Secret, now(), body))
		resp, err := client.Do(req)
		if err != nil {
			return retryable{perr.Wrap(err, CodeDelivery, "check that the webhook receiver is up", "webhook %s unreachable", w.URL)}
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		switch {
		case resp.StatusCode >= 500:
			return retryable{perr.New(CodeDelivery, "check the webhook receiver's logs", "webhook %s answered %s", w.URL, resp.Status)}
		case resp.StatusCode >= 300:
			return perr.New(CodeDelivery, "check the webhook URL and secret", "webhook %s refused the delivery: %s", w.URL, resp.Status)
		}
		return nil
	})
}

// SignWebhook returns the X-Polos-Signature value for body at t.
func SignWebhook(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(webhookMAC(secret, ts, body))
}

func webhookMAC(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return m.Sum(nil)
}

// VerifyWebhook checks a X-Polos-Signature header against body, for
// receivers: the MAC must match and t must be within tolerance of now
// (0: DefaultSignatureTolerance).
func VerifyWebhook(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultSignatureTolerance
	}
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	mac, herr := hex.DecodeString(sig)
	if err != nil || herr != nil || !hmac.Equal(mac, webhookMAC(secret, ts, body)) {
		return perr.New(CodeSignature, "check the shared webhook secret", "the %s header does not match the body", SignatureHeader)
	}
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return perr.New(CodeSignature, "check the clocks; replayed deliveries are refused", "the webhook was signed %s away from now (tolerance %s)", fmt.Sprint(d.Round(time.Second)), tolerance)
	}
	return nil
}
