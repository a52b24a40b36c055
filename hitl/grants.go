package hitl

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Scope says how far a grant reaches.
type Scope string

// Grant scopes.
const (
	ScopeSession Scope = "session" // this conversation/session only (the default)
	ScopeAgent   Scope = "agent"   // every session of this agent
)

// Kind is what a grant allows.
type Kind string

// Grant kinds.
const (
	KindExec Kind = "exec" // a shell command
	KindTool Kind = "tool" // a tool by name
	KindPath Kind = "path" // "operation:path"
)

// Grant error codes.
const (
	CodeBadGrant      perr.Code = "HITL_BAD_GRANT"
	CodeGrantNotFound perr.Code = "GRANT_NOT_FOUND"
	CodeGrantStore    perr.Code = "GRANT_STORE"
)

// Grant is a recorded allow-always decision.
type Grant struct {
	ID        string    `json:"id"`
	Namespace string    `json:"namespace"`
	Scope     Scope     `json:"scope"`
	ScopeID   string    `json:"scope_id"` // session ID or agent name
	Kind      Kind      `json:"kind"`
	Pattern   string    `json:"pattern"`    // the exact subject when ExactOnly, else the person's pattern
	ExactOnly bool      `json:"exact_only"` // true: only Pattern itself matches
	RunID     string    `json:"run_id"`
	StepKey   string    `json:"step_key"`
	DecidedBy string    `json:"decided_by"`
	At        time.Time `json:"at"`
}

// Scopes are the scope IDs a request is checked against.
type Scopes struct {
	Session string // session ID ("" skips session grants)
	Agent   string // agent name ("" skips agent grants)
}

// Matches reports whether the grant allows subject of kind. Exact grants
// match only the same subject. Patterns: for exec, `*` matches any run of
// characters that holds no shell operator, quote, expansion or newline
// (so `npm install *` allows `npm install chalk` but never
// `npm install x; rm -rf ~` or `npm install $(curl ...)`); for path,
// "operation:glob" with doublestar globbing on the cleaned path and the same
// operation; for tool, `*` over tool names.
func (g Grant) Matches(kind Kind, subject string) bool {
	if kind != g.Kind || subject == "" {
		return false
	}
	if kind == KindPath {
		op, p, ok := strings.Cut(subject, ":")
		if !ok {
			return false
		}
		subject = PathSubject(op, p)
	}
	if g.ExactOnly {
		return g.Pattern == subject
	}
	switch kind {
	case KindExec, KindTool:
		return wildcardMatch(g.Pattern, subject)
	case KindPath:
		gop, gpat, ok := strings.Cut(g.Pattern, ":")
		op, p, _ := strings.Cut(subject, ":")
		if !ok || gop != op || hasDotDot(p) {
			return false
		}
		m, err := doublestar.Match(gpat, p)
		return err == nil && m
	}
	return false
}

// shellSpecial are the characters a `*` of an exec pattern never matches.
const shellSpecial = ";&|<>$`()\\\"'\n\r{}[]*?!#~\x00"

// wildcardMatch matches pattern (literal text and `*`) against s, where a
// `*` matches any run of characters outside shellSpecial.
func wildcardMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	middle, last := parts[1:len(parts)-1], parts[len(parts)-1]
	for _, part := range middle {
		// Leftmost: each `*` takes as little as it can, which is never worse
		// when a `*` may not cross special characters.
		j := strings.Index(s, part)
		if j < 0 || strings.ContainsAny(s[:j], shellSpecial) {
			return false
		}
		s = s[j+len(part):]
	}
	if !strings.HasSuffix(s, last) {
		return false
	}
	return !strings.ContainsAny(s[:len(s)-len(last)], shellSpecial)
}

// GrantFromDecision builds the grant an allow_always decision asks for, or
// returns nil when the decision asks for none (not approved, or no
// allow_always). The grant never widens past what was approved: without a
// pattern it is exact; a pattern must match the approved request itself,
// and a pattern is refused for tools' kinds that cannot hold one.
func GrantFromDecision(p Payload, d Decision, scopes Scopes, runID, stepKey, decidedBy string, at time.Time) (*Grant, error) {
	if !d.Approved || !d.AllowAlways {
		return nil, nil
	}
	kind, subject, ok := p.Subject()
	if !ok {
		return nil, perr.New(CodeBadGrant, "allow_always applies to exec, tool and path approvals only", "a %q request cannot be allowed always", p.Source)
	}
	scopeID := scopes.Session
	if d.Scope == ScopeAgent {
		scopeID = scopes.Agent
	}
	if scopeID == "" {
		return nil, perr.New(CodeBadGrant, "start the run with a session, or choose scope agent", "no %s ID to attach the grant to", d.Scope)
	}
	g := &Grant{Scope: d.Scope, ScopeID: scopeID, Kind: kind, Pattern: subject, ExactOnly: true,
		RunID: runID, StepKey: stepKey, DecidedBy: decidedBy, At: at.UTC()}
	if d.Pattern != "" && d.Pattern != subject {
		g.Pattern, g.ExactOnly = d.Pattern, false
		if !g.Matches(kind, subject) {
			return nil, perr.New(CodeBadGrant, "choose a pattern that covers the request you approved",
				"pattern %q does not match the approved %s %q", d.Pattern, kind, subject)
		}
	}
	g.ID = grantID(*g)
	return g, nil
}

// grantID is stable over (scope, scope ID, kind, pattern, exactness), so
// recording the same grant twice keeps one entry.
func grantID(g Grant) string {
	h := sha256.Sum256([]byte(strings.Join([]string{string(g.Scope), g.ScopeID, string(g.Kind), g.Pattern, boolStr(g.ExactOnly)}, "\x00")))
	return "g_" + hex.EncodeToString(h[:8])
}

func boolStr(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// GrantAttrs describes a grant as event attributes (for
// ctx.Annotate("grant", GrantAttrs(g)) from workflow code).
func GrantAttrs(g *Grant) map[string]string {
	return map[string]string{"grant_id": g.ID, "kind": string(g.Kind), "scope": string(g.Scope), "scope_id": g.ScopeID,
		"pattern": g.Pattern, "exact_only": strconv.FormatBool(g.ExactOnly), "step_key": g.StepKey, "decided_by": g.DecidedBy}
}

// GrantEvent is the history entry of a recorded grant (an annotation named
// "grant", the grant as JSON data and GrantAttrs), for the agent loop to
// append to the run that asked.
func GrantEvent(g *Grant) *events.Event {
	b, _ := json.Marshal(g)
	return &events.Event{Type: events.Annotation, Name: "grant", Key: g.StepKey, Data: b, Attrs: GrantAttrs(g)}
}

// Grants stores grants in the JetStream KV bucket polos_grants under
// "<ns>.<scope>.<b64(scopeID)>.<kind>.<id>".
type Grants struct {
	kv jetstream.KeyValue
	ns string
}

// NewGrants opens the grants bucket (provisioned by protocol.Provision).
func NewGrants(ctx context.Context, js jetstream.JetStream, ns string) (*Grants, error) {
	if err := events.ValidateID("namespace", ns); err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, protocol.GrantsKV)
	if err != nil {
		return nil, protocol.Unavailable(err, CodeGrantStore, "grants bucket %s unavailable", protocol.GrantsKV)
	}
	return &Grants{kv: kv, ns: ns}, nil
}

func (s *Grants) key(scope Scope, scopeID string, kind Kind, id string) string {
	return s.ns + "." + string(scope) + "." + base64.RawURLEncoding.EncodeToString([]byte(scopeID)) + "." + string(kind) + "." + id
}

// Record stores g durably (idempotent: the same grant keeps one entry).
// It fills g.ID and g.Namespace.
func (s *Grants) Record(ctx context.Context, g *Grant) error {
	switch {
	case g.Scope != ScopeSession && g.Scope != ScopeAgent:
		return perr.New(CodeBadGrant, `use scope "session" or "agent"`, "grant scope %q is unknown", g.Scope)
	case g.Kind != KindExec && g.Kind != KindTool && g.Kind != KindPath:
		return perr.New(CodeBadGrant, "use kind exec, tool or path", "grant kind %q is unknown", g.Kind)
	case g.ScopeID == "" || g.Pattern == "":
		return perr.New(CodeBadGrant, "build grants with hitl.GrantFromDecision", "a grant needs a scope ID and a pattern")
	}
	g.Namespace = s.ns
	g.ID = grantID(*g)
	b, _ := json.Marshal(g)
	if _, err := s.kv.Put(ctx, s.key(g.Scope, g.ScopeID, g.Kind, g.ID), b); err != nil {
		return perr.Wrap(err, CodeGrantStore, "check the NATS server", "cannot record grant %s", g.ID)
	}
	return nil
}

// Match returns the first grant (session before agent) that allows subject
// of kind. On a store error it returns no grant and the error: callers ask
// the person, which is the safe direction.
func (s *Grants) Match(ctx context.Context, scopes Scopes, kind Kind, subject string) (*Grant, bool, error) {
	for _, sc := range []struct {
		scope Scope
		id    string
	}{{ScopeSession, scopes.Session}, {ScopeAgent, scopes.Agent}} {
		if sc.id == "" {
			continue
		}
		gs, err := s.list(ctx, s.key(sc.scope, sc.id, kind, "*"))
		if err != nil {
			return nil, false, err
		}
		for i := range gs {
			if gs[i].Matches(kind, subject) {
				return &gs[i], true, nil
			}
		}
	}
	return nil, false, nil
}

// GrantFilter selects grants to list; empty fields match everything.
type GrantFilter struct {
	Scope   Scope
	ScopeID string
	Kind    Kind
}

// List returns the namespace's grants, oldest first.
func (s *Grants) List(ctx context.Context, f GrantFilter) ([]Grant, error) {
	scope, id, kind := "*", "*", "*"
	if f.Scope != "" {
		scope = string(f.Scope)
	}
	if f.ScopeID != "" {
		id = base64.RawURLEncoding.EncodeToString([]byte(f.ScopeID))
	}
	if f.Kind != "" {
		kind = string(f.Kind)
	}
	gs, err := s.list(ctx, s.ns+"."+scope+"."+id+"."+kind+".*")
	sort.Slice(gs, func(i, j int) bool { return gs[i].At.Before(gs[j].At) })
	return gs, err
}

// Revoke deletes the grant with id. An unknown id is CodeGrantNotFound.
func (s *Grants) Revoke(ctx context.Context, id string) (Grant, error) {
	if err := events.ValidateID("grant ID", id); err != nil {
		return Grant{}, err
	}
	gs, err := s.list(ctx, s.ns+".*.*.*."+id)
	if err != nil {
		return Grant{}, err
	}
	if len(gs) == 0 {
		return Grant{}, perr.New(CodeGrantNotFound, "list grants with `polos grants list`", "no grant %s in namespace %s", id, s.ns)
	}
	g := gs[0]
	if err := s.kv.Delete(ctx, s.key(g.Scope, g.ScopeID, g.Kind, g.ID)); err != nil {
		return Grant{}, perr.Wrap(err, CodeGrantStore, "check the NATS server", "cannot revoke grant %s", id)
	}
	return g, nil
}

func (s *Grants) list(ctx context.Context, filter string) ([]Grant, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, perr.Wrap(err, CodeGrantStore, "check the NATS server", "cannot list grants")
	}
	var out []Grant
	for k := range lister.Keys() {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue // revoked meanwhile
			}
			return nil, perr.Wrap(err, CodeGrantStore, "check the NATS server", "cannot read grant %s", k)
		}
		var g Grant
		if json.Unmarshal(e.Value(), &g) == nil {
			out = append(out, g)
		}
	}
	return out, nil
}

func hasDotDot(p string) bool {
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return true
		}
	}
	return false
}
