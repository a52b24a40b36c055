package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/hitl/web"
	"github.com/polos-run/polos/notify"
	"github.com/polos-run/polos/perr"
)

// Approval defaults.
const (
	// DefaultApprovalLinkTTL is how long an approval link stays valid.
	DefaultApprovalLinkTTL = 7 * 24 * time.Hour
	// EnvWebhookURL / EnvWebhookSecret configure the generic webhook
	// channel (a signed POST per approval request).
	EnvWebhookURL      = "POLOS_WEBHOOK_URL"
	EnvWebhookSecret   = "POLOS_WEBHOOK_SECRET"
	approvalSecretFile = "approval.secret"
)

// approvalSecret is the HMAC key of approval links: POLOS_APPROVAL_SECRET,
// or 32 random bytes kept in the data directory (so links survive restarts).
func approvalSecret(dataDir string) ([]byte, error) {
	if s := os.Getenv("POLOS_APPROVAL_SECRET"); s != "" {
		return []byte(s), nil
	}
	path := filepath.Join(dataDir, approvalSecretFile)
	if b, err := os.ReadFile(path); err == nil && len(b) >= 64 {
		return b[:64], nil
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	b := []byte(hex.EncodeToString(raw))
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, perr.Wrap(err, CodeStartup, "choose a writable --data-dir or set POLOS_APPROVAL_SECRET", "cannot store the approval secret")
	}
	return b, nil
}

// startApprovals mounts the web approval handler and follows suspended
// events to announce approval links (log line; webhook when configured).
func (d *Daemon) startApprovals(ctx context.Context, mount func(pattern string, h any), httpURL string) error {
	secret, err := approvalSecret(d.o.DataDir)
	if err != nil {
		return err
	}
	cl, err := client.New(d.nc, d.o.Namespace)
	if err != nil {
		return err
	}
	h, err := web.New(web.Config{Client: cl, Secret: secret, Logf: func(f string, a ...any) { d.o.Logger.Info(fmt.Sprintf(f, a...)) }})
	if err != nil {
		return err
	}
	mount("/approve/", h)
	mount("/slack/interactions", h)
	var wh *notify.Webhook
	if u := os.Getenv(EnvWebhookURL); u != "" {
		wh = &notify.Webhook{URL: u, Secret: []byte(os.Getenv(EnvWebhookSecret))}
	}
	// Only approval requests made from now on: earlier ones were announced
	// by the process that was running then.
	opened, failed := make(chan struct{}), make(chan error, 1)
	go func() {
		err := cl.FollowAll(ctx, client.FollowOptions{Types: []events.Type{events.Suspended}, NewOnly: true, Opened: func() { close(opened) }}, func(ev events.Event, _ client.Cursor) error {
			p, ok, _ := hitl.ParsePayload(ev.Data)
			if !ok {
				return nil
			}
			url, token, err := web.IssueLink(secret, httpURL, d.o.Namespace, ev.RunID, ev.Key, DefaultApprovalLinkTTL, time.Now())
			if err != nil {
				return nil
			}
			fmt.Fprintf(d.o.Out, "polosd: approval needed: run %s step %s %q: %s\n", ev.RunID, ev.Key, strings.TrimSpace(p.Form.Title), url)
			if wh != nil {
				req := notify.Request{Namespace: d.o.Namespace, RunID: ev.RunID, StepKey: ev.Key, Payload: p, ApprovalURL: url, Token: token, TimeoutAt: ev.Attr("timeout_at")}
				if _, err := wh.Notify(ctx, req); err != nil {
					d.o.Logger.Warn("webhook notification failed", "run", ev.RunID, "err", err)
				}
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			d.o.Logger.Error("following approval requests stopped", "err", err)
		}
		failed <- err
	}()
	select {
	case <-opened:
		return nil
	case err := <-failed:
		if err == nil {
			return ctx.Err()
		}
		return perr.Wrap(err, CodeStartup, "", "cannot follow approval requests")
	}
}
