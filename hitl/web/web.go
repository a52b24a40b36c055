// Package web serves the human side of Polos approvals over HTTP: one
// approval page per waiting step (GET shows the form and what is being
// decided, POST decides) and the Slack interactions endpoint. It is a plain
// http.Handler; polosd mounts it on its HTTP API.
//
// Routes (relative to where it is mounted; use http.StripPrefix for a prefix):
//
//	GET  /approve/{run}/{step}?token=...   the page
//	POST /approve/{run}/{step}             decide (HTML form, or JSON body with ?token=)
//	POST /slack/interactions               Slack block_actions (signed by Slack)
//
// The credential of the page is the approval token in its URL: single use
// per step (see hitl.Claims), bound to namespace, run and step, with
// expiry. A decision is recorded as decided_by "web:<token id>" or
// "slack:<user id>".
package web

import (
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/notify"
	"github.com/polos-run/polos/perr"
)

// Defaults.
const (
	MaxBodyBytes       = hitl.MaxDecisionBytes + 64<<10
	DefaultDedupeSize  = 4096 // Slack actions remembered to ignore retries
	DefaultCallTimeout = 15 * time.Second
)

// Config configures the handler.
type Config struct {
	Client *client.Client // resumes runs and reads their state (its namespace is the handler's)
	Secret []byte         // approval token secret (>= hitl.MinSecretBytes)
	// Slack, when set, gets chat.update once a Slack action decided a step.
	Slack *notify.Slack
	// SlackSigningSecret verifies /slack/interactions; empty refuses every request.
	SlackSigningSecret string
	// OnDecided, when set, is called after this handler decided a step (page
	// or Slack), e.g. for polosd to update the notifications it sent.
	OnDecided func(ctx context.Context, runID, stepKey string, o notify.Outcome)
	Now       func() time.Time // default time.Now
	Logf      func(format string, args ...any)
}

// CodeConfig: the handler was built without what it needs.
const CodeConfig perr.Code = "HITL_WEB_CONFIG"

// Handler is the http.Handler.
type Handler struct {
	cfg Config
	mux *http.ServeMux

	mu      sync.Mutex
	handled map[string]bool // Slack action keys already applied
	order   []string
}

// New builds the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Client == nil {
		return nil, perr.New(CodeConfig, "pass a client.Client", "the approval handler needs a Polos client")
	}
	if len(cfg.Secret) < hitl.MinSecretBytes {
		return nil, perr.New(hitl.CodeWeakSecret, "configure at least 32 random bytes", "the approval token secret is too short")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), handled: map[string]bool{}}
	h.mux.HandleFunc("GET /approve/{run}/{step}", h.getPage)
	h.mux.HandleFunc("POST /approve/{run}/{step}", h.postPage)
	h.mux.HandleFunc("POST /slack/interactions", h.slack)
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer") // the URL carries the token
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	h.mux.ServeHTTP(w, r)
}

// IssueLink issues a token for a waiting step and returns the page URL,
// for whoever sends notifications (polosd, the agent loop).
func IssueLink(secret []byte, baseURL, ns, runID, stepKey string, ttl time.Duration, now time.Time) (url, token string, err error) {
	token, _, err = hitl.IssueToken(secret, ns, runID, stepKey, ttl, now)
	if err != nil {
		return "", "", err
	}
	return hitl.ApprovalURL(baseURL, runID, stepKey, token), token, nil
}

// stepState is what the page needs to know about a step.
type stepState struct {
	waiting  *events.WaitingStep
	decision *events.Event   // the resumed event, once decided
	payload  json.RawMessage // the suspend payload
	status   string
}

func (h *Handler) state(ctx context.Context, runID, step string) (stepState, error) {
	hist, err := h.cfg.Client.History(ctx, runID, 0)
	if err != nil {
		return stepState{}, err
	}
	s := events.Summarize(hist)
	st := stepState{status: s.Status}
	for i := range s.Waiting {
		w := s.Waiting[i]
		if w.StepKey == step && (w.Kind == events.WaitApproval || w.Kind == events.WaitOperator) {
			st.waiting = &w
		}
	}
	for i := range hist {
		switch {
		case hist[i].Type == events.Resumed && hist[i].Key == step:
			st.decision = &hist[i]
		case hist[i].Type == events.Suspended && hist[i].Key == step:
			st.payload = hist[i].Data
		}
	}
	return st, nil
}

// outcomeOf reads a resumed event.
func outcomeOf(e *events.Event) notify.Outcome {
	o := notify.Outcome{DecidedBy: e.Attr("decided_by"), TimedOut: e.Attr("timed_out") == "true"}
	if o.DecidedBy == "" {
		o.DecidedBy = "someone"
	}
	o.DecidedAt, _ = time.Parse(time.RFC3339Nano, e.Attr("decided_at"))
	if o.DecidedAt.IsZero() {
		o.DecidedAt = e.At()
	}
	if d, err := hitl.ParseDecision(e.Data); err == nil && !o.TimedOut {
		o.Approved, o.Feedback = d.Approved, d.Feedback
	}
	return o
}

func (h *Handler) verify(r *http.Request, token string) (hitl.Claims, error) {
	return hitl.VerifyToken(h.cfg.Secret, token, h.cfg.Client.Namespace(), r.PathValue("run"), r.PathValue("step"), h.cfg.Now())
}

func (h *Handler) getPage(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("token")
	if _, err := h.verify(r, token); err != nil {
		h.render(w, http.StatusForbidden, page{Kind: "invalid", Error: err})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), DefaultCallTimeout)
	defer cancel()
	st, err := h.state(ctx, r.PathValue("run"), r.PathValue("step"))
	if err != nil {
		h.render(w, http.StatusNotFound, page{Kind: "invalid", Error: err})
		return
	}
	h.renderState(w, r, st, token, nil, nil)
}

// renderState shows the form (waiting), the decision (decided) or that the
// step no longer waits.
func (h *Handler) renderState(w http.ResponseWriter, r *http.Request, st stepState, token string, verr error, values map[string]string) {
	p := page{RunID: r.PathValue("run"), StepKey: r.PathValue("step"), Token: token, Error: verr, Values: values}
	switch {
	case st.decision != nil:
		o := outcomeOf(st.decision)
		p.Kind, p.Outcome = "decided", &o
		p.Payload, _, _ = hitl.ParsePayload(st.payload)
		h.render(w, http.StatusOK, p)
	case st.waiting != nil:
		pl, _, err := hitl.ParsePayload(st.waiting.Form)
		if err != nil {
			p.Error = err
		}
		p.Kind, p.Payload, p.TimeoutAt = "form", pl, st.waiting.TimeoutAt
		code := http.StatusOK
		if verr != nil {
			code = http.StatusUnprocessableEntity
		}
		h.render(w, code, p)
	default:
		p.Kind, p.Status = "gone", st.status
		h.render(w, http.StatusConflict, p)
	}
}

func (h *Handler) postPage(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	isJSON := mt == "application/json"
	token := r.URL.Query().Get("token")
	var body []byte
	if isJSON {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
	} else {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		if t := r.PostForm.Get("token"); t != "" {
			token = t
		}
	}
	claims, err := h.verify(r, token)
	if err != nil {
		h.reply(w, isJSON, http.StatusForbidden, page{Kind: "invalid", Error: err})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), DefaultCallTimeout)
	defer cancel()
	runID, step := r.PathValue("run"), r.PathValue("step")
	st, err := h.state(ctx, runID, step)
	if err != nil {
		h.reply(w, isJSON, http.StatusNotFound, page{Kind: "invalid", Error: err})
		return
	}
	var values map[string]string
	if !isJSON {
		if st.waiting == nil {
			h.renderState(w, r, st, token, nil, nil)
			return
		}
		pl, _, _ := hitl.ParsePayload(st.waiting.Form)
		body, values = formToJSON(pl.Form, r)
	}
	_, err = h.cfg.Client.Resume(ctx, runID, step, client.Decision{Data: body, DecidedBy: "web:" + claims.ID, Validate: hitl.Validate})
	if err != nil {
		if c := perr.CodeOf(err); c == client.CodeRunFinished || c == client.CodeStepNotWaiting {
			// A run that finished right after the first decision: say who decided.
			if st2, serr := h.state(ctx, runID, step); serr == nil && st2.decision != nil {
				o := outcomeOf(st2.decision)
				err = perr.New(client.CodeAlreadyDecided, "nothing to do: the first decision stands",
					"step %q of run %s was already decided by %s at %s", step, runID, o.DecidedBy, o.DecidedAt.Format(time.RFC3339))
			}
		}
		code := statusOf(err)
		if isJSON {
			h.reply(w, true, code, page{Kind: "error", Error: err})
			return
		}
		st2, serr := h.state(ctx, runID, step)
		if serr != nil {
			st2 = st
		}
		h.renderState(w, r, st2, token, err, values)
		return
	}
	st, err = h.state(ctx, runID, step)
	if err != nil || st.decision == nil {
		h.reply(w, isJSON, http.StatusOK, page{Kind: "decided", Outcome: &notify.Outcome{DecidedBy: "web:" + claims.ID, DecidedAt: h.cfg.Now()}})
		return
	}
	o := outcomeOf(st.decision)
	h.decided(ctx, runID, step, o)
	pl, _, _ := hitl.ParsePayload(st.payload)
	h.reply(w, isJSON, http.StatusOK, page{Kind: "done", Outcome: &o, RunID: runID, StepKey: step, Payload: pl})
}

func statusOf(err error) int {
	switch perr.CodeOf(err) {
	case client.CodeAlreadyDecided, client.CodeRunFinished, client.CodeStepNotWaiting:
		return http.StatusConflict
	case hitl.CodeMissingField, hitl.CodeBadType, hitl.CodeBadOption, hitl.CodeBadInput, client.CodeBadInput:
		return http.StatusUnprocessableEntity
	case events.CodeRunNotFound:
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

// reply writes the page as HTML, or as JSON for JSON clients.
func (h *Handler) reply(w http.ResponseWriter, asJSON bool, code int, p page) {
	if !asJSON {
		h.render(w, code, p)
		return
	}
	out := map[string]any{"ok": p.Error == nil}
	if p.Error != nil {
		out["code"] = string(perr.CodeOf(p.Error))
		out["error"] = p.Error.Error()
	}
	if p.Outcome != nil {
		out["outcome"] = p.Outcome
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(out)
}

// formToJSON converts an HTML form post into resume data using the form's
// field types: booleans from buttons/checkboxes ("true"/"on" → true,
// absent or "false" → false; any other text stays a string and is refused
// by validation), numbers parsed (unparsable text stays a string and is
// refused), empty inputs omitted. Values are echoed back on errors.
func formToJSON(f hitl.Form, r *http.Request) (json.RawMessage, map[string]string) {
	out := map[string]any{}
	values := map[string]string{}
	for _, fl := range f.Fields {
		v, present := r.PostForm[fl.Key]
		s := ""
		if present && len(v) > 0 {
			s = v[len(v)-1]
		}
		values[fl.Key] = s
		switch fl.Type {
		case hitl.FieldBoolean:
			switch s {
			case "true", "on":
				out[fl.Key] = true
			case "", "false":
				if present || fl.Key != hitl.KeyApproved {
					out[fl.Key] = false
				}
			default:
				out[fl.Key] = s
			}
		case hitl.FieldNumber:
			if s == "" {
				continue
			}
			if n, err := strconv.ParseFloat(s, 64); err == nil {
				out[fl.Key] = n
			} else {
				out[fl.Key] = s
			}
		default:
			if s != "" {
				out[fl.Key] = s
			}
		}
	}
	b, _ := json.Marshal(out)
	return b, values
}

func (h *Handler) decided(ctx context.Context, runID, step string, o notify.Outcome) {
	if h.cfg.OnDecided != nil {
		h.cfg.OnDecided(ctx, runID, step, o)
	}
}

// remember records a Slack action key; false if it was already handled.
func (h *Handler) remember(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.handled[key] {
		return false
	}
	h.handled[key] = true
	h.order = append(h.order, key)
	if len(h.order) > DefaultDedupeSize {
		delete(h.handled, h.order[0])
		h.order = h.order[1:]
	}
	return true
}

func (h *Handler) forget(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.handled, key)
}

// slackPayload is the part of a block_actions payload we read.
type slackPayload struct {
	Type string `json:"type"`
	User struct {
		ID string `json:"id"`
	} `json:"user"`
	Container struct {
		MessageTS string `json:"message_ts"`
		ChannelID string `json:"channel_id"`
	} `json:"container"`
	Actions []struct {
		ActionID string `json:"action_id"`
		Value    string `json:"value"`
		ActionTS string `json:"action_ts"`
	} `json:"actions"`
}

// slack handles Slack interactions. Signature and timestamp are checked
// first (401 otherwise). A retry of an action already handled
// (X-Slack-Retry-Num, same action) is acknowledged without effect; the
// run's history is the durable guard (a second decision on a step is
// ALREADY_DECIDED, answered 200 so Slack stops retrying).
func (h *Handler) slack(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if err := notify.VerifySlack(h.cfg.SlackSigningSecret, r.Header, body, h.cfg.Now()); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	var p slackPayload
	if err := json.Unmarshal([]byte(form.Get("payload")), &p); err != nil || p.Type != "block_actions" || len(p.Actions) == 0 {
		w.WriteHeader(http.StatusOK) // not ours to handle; acknowledge
		return
	}
	a := p.Actions[0]
	if a.ActionID != notify.SlackActionApprove && a.ActionID != notify.SlackActionReject {
		w.WriteHeader(http.StatusOK) // the link button also posts an action
		return
	}
	key := p.Container.ChannelID + "/" + p.Container.MessageTS + "/" + a.ActionID + "/" + a.ActionTS + "/" + p.User.ID
	if !h.remember(key) {
		h.cfg.Logf("slack: ignoring already handled action %s (retry %s)", key, r.Header.Get("X-Slack-Retry-Num"))
		w.WriteHeader(http.StatusOK)
		return
	}
	var v notify.SlackAction
	if err := json.Unmarshal([]byte(a.Value), &v); err != nil {
		http.Error(w, "bad action value", http.StatusBadRequest)
		return
	}
	if v.Namespace != h.cfg.Client.Namespace() {
		http.Error(w, "wrong namespace", http.StatusForbidden)
		return
	}
	if _, err := hitl.VerifyToken(h.cfg.Secret, v.Token, v.Namespace, v.RunID, v.StepKey, h.cfg.Now()); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	data := json.RawMessage(`{"approved":false}`)
	if a.ActionID == notify.SlackActionApprove {
		data = json.RawMessage(`{"approved":true}`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultCallTimeout)
	defer cancel()
	_, err = h.cfg.Client.Resume(ctx, v.RunID, v.StepKey, client.Decision{Data: data, DecidedBy: "slack:" + p.User.ID, Validate: hitl.Validate})
	switch perr.CodeOf(err) {
	case "", client.CodeAlreadyDecided, client.CodeRunFinished:
	default:
		h.forget(key) // let Slack's retry try again
		h.cfg.Logf("slack: deciding %s/%s: %v", v.RunID, v.StepKey, err)
		http.Error(w, err.Error(), statusOf(err))
		return
	}
	if err == nil && h.cfg.OnDecided != nil {
		if st, serr := h.state(ctx, v.RunID, v.StepKey); serr == nil && st.decision != nil {
			h.decided(ctx, v.RunID, v.StepKey, outcomeOf(st.decision))
		}
	}
	if h.cfg.Slack != nil {
		if st, serr := h.state(ctx, v.RunID, v.StepKey); serr == nil && st.decision != nil {
			title := ""
			if pl, ok, _ := hitl.ParsePayload(st.payload); ok {
				title = pl.Form.Title
			}
			ref := notify.Ref{Channel: "slack", Target: p.Container.ChannelID, ID: p.Container.MessageTS}
			if uerr := h.cfg.Slack.UpdateMessage(ctx, ref, title, outcomeOf(st.decision)); uerr != nil {
				h.cfg.Logf("slack: chat.update: %v", uerr)
			}
		}
	}
	w.WriteHeader(http.StatusOK)
}
