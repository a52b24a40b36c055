// Package slackfake is a local fake of the parts of the Slack Web API Polos
// uses (chat.postMessage, chat.update) plus Slack's side of interactivity:
// it POSTs signed block_actions payloads to an app's interactions endpoint,
// as Slack does when a person clicks a button. It speaks the real wire
// format so the real notify.Slack client and hitl/web handler run unchanged.
package slackfake

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/polos-run/polos/notify"
)

// Call is one recorded Web API call.
type Call struct {
	Method string         // "chat.postMessage"
	Body   map[string]any // the JSON body
	TS     string         // message ts (assigned by postMessage, given to update)
}

// Server is the fake.
type Server struct {
	*httptest.Server
	Token   string // the bot token it accepts
	Channel string // the channel ID it answers with

	mu    sync.Mutex
	calls []Call
	seq   int
	fail  int // answer the next fail calls with 503
}

// New starts a fake accepting token.
func New(token string) *Server {
	s := &Server{Token: token, Channel: "C0POLOS"}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/{method}", s.api)
	s.Server = httptest.NewServer(mux)
	return s
}

// APIURL is the base URL to give notify.Slack.
func (s *Server) APIURL() string { return s.URL + "/api" }

// FailNext makes the next n calls answer 503 (to test retries).
func (s *Server) FailNext(n int) {
	s.mu.Lock()
	s.fail = n
	s.mu.Unlock()
}

// Calls returns the recorded calls of method ("" for all).
func (s *Server) Calls(method string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if method == "" || c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	method := r.PathValue("method")
	reply := func(v map[string]any) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(v)
	}
	s.mu.Lock()
	if s.fail > 0 {
		s.fail--
		s.mu.Unlock()
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	s.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		reply(map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		reply(map[string]any{"ok": false, "error": "invalid_json"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch method {
	case "chat.postMessage":
		if body["channel"] == "" || body["channel"] == nil {
			reply(map[string]any{"ok": false, "error": "channel_not_found"})
			return
		}
		s.seq++
		ts := fmt.Sprintf("1700000000.%06d", s.seq)
		s.calls = append(s.calls, Call{Method: method, Body: body, TS: ts})
		reply(map[string]any{"ok": true, "channel": s.Channel, "ts": ts, "message": body})
	case "chat.update":
		ts, _ := body["ts"].(string)
		found := false
		for _, c := range s.calls {
			found = found || (c.Method == "chat.postMessage" && c.TS == ts)
		}
		if !found || body["channel"] != s.Channel {
			reply(map[string]any{"ok": false, "error": "message_not_found"})
			return
		}
		s.calls = append(s.calls, Call{Method: method, Body: body, TS: ts})
		reply(map[string]any{"ok": true, "channel": s.Channel, "ts": ts})
	default:
		reply(map[string]any{"ok": false, "error": "unknown_method"})
	}
}

// Button finds the button with actionID in a posted message.
func (c Call) Button(actionID string) (map[string]any, bool) {
	blocks, _ := c.Body["blocks"].([]any)
	for _, b := range blocks {
		bm, _ := b.(map[string]any)
		els, _ := bm["elements"].([]any)
		for _, e := range els {
			em, _ := e.(map[string]any)
			if em["action_id"] == actionID {
				return em, true
			}
		}
	}
	return nil, false
}

// Click builds the block_actions payload Slack sends when userID clicks
// the button actionID of the posted message.
func (s *Server) Click(msg Call, actionID, userID string) (map[string]any, error) {
	btn, ok := msg.Button(actionID)
	if !ok {
		return nil, fmt.Errorf("message %s has no button %q", msg.TS, actionID)
	}
	actionTS := strconv.FormatFloat(float64(time.Now().UnixMicro())/1e6, 'f', 6, 64)
	return map[string]any{
		"type":       "block_actions",
		"user":       map[string]any{"id": userID, "username": strings.ToLower(userID), "team_id": "T0POLOS"},
		"api_app_id": "A0POLOS",
		"team":       map[string]any{"id": "T0POLOS"},
		"container":  map[string]any{"type": "message", "message_ts": msg.TS, "channel_id": s.Channel, "is_ephemeral": false},
		"channel":    map[string]any{"id": s.Channel},
		"message":    map[string]any{"ts": msg.TS, "blocks": msg.Body["blocks"]},
		"trigger_id": "trig." + actionTS,
		"actions": []any{map[string]any{
			"type": "button", "action_id": actionID, "block_id": "polos_decide",
			"value": btn["value"], "action_ts": actionTS,
		}},
	}, nil
}

// Delivery is how to send an interaction.
type Delivery struct {
	SigningSecret string    // signs the request (use a wrong one to test refusal)
	Timestamp     time.Time // zero: now
	RetryNum      int       // >0 sets X-Slack-Retry-Num, as Slack does on retries
}

// Interact POSTs payload to endpoint as Slack does (form-encoded
// payload=<json>, signed) and returns the status code and body.
func Interact(ctx context.Context, endpoint string, payload map[string]any, d Delivery) (int, string, error) {
	p, err := json.Marshal(payload)
	if err != nil {
		return 0, "", err
	}
	body := url.Values{"payload": {string(p)}}.Encode()
	ts := d.Timestamp
	if ts.IsZero() {
		ts = time.Now()
	}
	tss := strconv.FormatInt(ts.Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", tss)
	req.Header.Set("X-Slack-Signature", notify.SignSlack(d.SigningSecret, tss, []byte(body)))
	if d.RetryNum > 0 {
		req.Header.Set("X-Slack-Retry-Num", strconv.Itoa(d.RetryNum))
		req.Header.Set("X-Slack-Retry-Reason", "http_timeout")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}
