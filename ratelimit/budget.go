package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// ScopeKind is what a budget applies to.
type ScopeKind string

const (
	ScopeRun       ScopeKind = "run"
	ScopeAgent     ScopeKind = "agent"
	ScopeNamespace ScopeKind = "namespace"
)

// Scope is one budget: a run, an agent (workflow name) or the namespace.
type Scope struct {
	Kind ScopeKind `json:"kind"`
	ID   string    `json:"id,omitempty"` // run ID or agent name; "" for the namespace
}

func (s Scope) String() string {
	if s.Kind == ScopeNamespace {
		return string(s.Kind)
	}
	return string(s.Kind) + ":" + s.ID
}

// ParseScope reads "run:ID", "agent:NAME" or "namespace".
func ParseScope(s string) (Scope, error) {
	kind, id, _ := strings.Cut(s, ":")
	sc := Scope{Kind: ScopeKind(kind), ID: id}
	return sc, sc.validate()
}

func (s Scope) validate() error {
	switch {
	case s.Kind == ScopeNamespace && s.ID == "":
		return nil
	case (s.Kind == ScopeRun || s.Kind == ScopeAgent) && s.ID != "":
		return events.ValidateID(string(s.Kind), s.ID)
	}
	return perr.New(CodeBadLimit, "name a budget as run:ID, agent:NAME or namespace", "budget scope %q is not valid", s.String())
}

// ScopesOf are the budgets a call of run runID of agent applies to.
func ScopesOf(runID, agent string) []Scope {
	return []Scope{{Kind: ScopeRun, ID: runID}, {Kind: ScopeAgent, ID: agent}, {Kind: ScopeNamespace}}
}

// Usage is what calls spent.
type Usage struct {
	Tokens int64   `json:"tokens"`
	Cost   float64 `json:"cost_usd"`
}

// BudgetLimit caps a scope. Zero in a field means no limit in it.
type BudgetLimit struct {
	Tokens int64   `json:"tokens,omitempty"`
	Cost   float64 `json:"cost_usd,omitempty"`
}

// BudgetState is a scope's stored limit and spending.
type BudgetState struct {
	Scope   Scope       `json:"scope"`
	Limit   BudgetLimit `json:"limit"`
	Used    Usage       `json:"used"`
	Updated time.Time   `json:"updated"`
}

// Exceeded describes the budget a call would cross; it is the cause of a
// CodeBudgetExceeded error (get it with ExceededOf).
type Exceeded struct {
	State BudgetState `json:"state"`
	Need  Usage       `json:"need"`
}

func (e *Exceeded) Error() string {
	return fmt.Sprintf("%s has used %d of %d tokens and $%.4f of $%.4f; the call needs %d tokens, $%.4f",
		e.State.Scope, e.State.Used.Tokens, e.State.Limit.Tokens, e.State.Used.Cost, e.State.Limit.Cost, e.Need.Tokens, e.Need.Cost)
}

// ExceededOf extracts the budget detail of a CodeBudgetExceeded error.
func ExceededOf(err error) (*Exceeded, bool) {
	var ex *Exceeded
	ok := errors.As(err, &ex)
	return ex, ok
}

// Budget-pause form fields: the agent loop suspends an over-budget run with
// BudgetForm; `polos budget set` resumes the runs whose form names the
// scope it raised.
const (
	FormSource      = "budget"
	FormSourceField = "_source"
	FormScopeField  = "scope"
)

// BudgetForm is the suspend payload of a run paused by a budget.
func BudgetForm(ex *Exceeded) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		FormSourceField: FormSource,
		FormScopeField:  ex.State.Scope.String(),
		"limit":         ex.State.Limit,
		"used":          ex.State.Used,
		"need":          ex.Need,
		"message":       "budget " + ex.State.Scope.String() + " would be exceeded; raise it with `polos budget set` to continue",
	})
	return b
}

// Budget keeps token and cost budgets per run, agent and namespace in the
// polos_budgets KV bucket.
//
// Check before a call, Add after it. Within one run calls are sequential,
// so a run budget is never crossed; agent and namespace budgets are shared
// by concurrent runs, whose calls in flight between Check and Add can
// overshoot them by at most one call each. Add is a compare-and-swap, so no
// usage is ever lost.
type Budget struct {
	js jetstream.JetStream
	ns string

	kv lazyKV
}

// NewBudget returns the budgets of namespace ns.
func NewBudget(js jetstream.JetStream, ns string) *Budget {
	return &Budget{js: js, ns: ns, kv: lazyKV{js: js, name: protocol.BudgetsKV}}
}

func (b *Budget) key(s Scope) string {
	if s.Kind == ScopeNamespace {
		return b.ns + ".namespace._"
	}
	return b.ns + "." + string(s.Kind) + "." + kvToken(s.ID)
}

func decodeBudget(cur []byte, s Scope) (BudgetState, error) {
	st := BudgetState{Scope: s}
	if len(cur) == 0 {
		return st, nil
	}
	if err := json.Unmarshal(cur, &st); err != nil {
		return st, perr.Wrap(err, CodeBadLimit, "reset it with `polos budget set`", "budget %s is unreadable", s)
	}
	st.Scope = s
	return st, nil
}

// Get returns a scope's state (zero limit and usage if never set).
func (b *Budget) Get(ctx context.Context, s Scope) (BudgetState, error) {
	if err := s.validate(); err != nil {
		return BudgetState{}, err
	}
	kv, err := b.kv.get(ctx)
	if err != nil {
		return BudgetState{}, err
	}
	entry, err := kv.Get(ctx, b.key(s))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return BudgetState{Scope: s}, nil
	}
	if err != nil {
		return BudgetState{}, perr.Wrap(err, events.CodeStoreIO, "check that the NATS server is up", "cannot read budget %s", s)
	}
	return decodeBudget(entry.Value(), s)
}

// Check returns a CodeBudgetExceeded error (cause *Exceeded) when spending
// need more in any of scopes would cross its limit, nil otherwise.
func (b *Budget) Check(ctx context.Context, scopes []Scope, need Usage) error {
	for _, s := range scopes {
		st, err := b.Get(ctx, s)
		if err != nil {
			return err
		}
		l := st.Limit
		if (l.Tokens > 0 && st.Used.Tokens+need.Tokens > l.Tokens) || (l.Cost > 0 && st.Used.Cost+need.Cost > l.Cost+1e-12) {
			return perr.Wrap(&Exceeded{State: st, Need: need}, CodeBudgetExceeded,
				"raise it with `polos budget set --"+scopeFlag(s)+" --tokens N --cost USD`; paused runs resume",
				"budget %s would be exceeded", s)
		}
	}
	return nil
}

func scopeFlag(s Scope) string {
	if s.Kind == ScopeNamespace {
		return "namespace-wide"
	}
	return string(s.Kind) + " " + s.ID
}

// Add records spending in every scope.
func (b *Budget) Add(ctx context.Context, scopes []Scope, u Usage) error {
	for _, s := range scopes {
		if _, err := b.change(ctx, s, func(st *BudgetState) {
			st.Used.Tokens += u.Tokens
			st.Used.Cost += u.Cost
		}); err != nil {
			return err
		}
	}
	return nil
}

// Set replaces a scope's limit (keeping what it used) and returns the state.
func (b *Budget) Set(ctx context.Context, s Scope, l BudgetLimit) (BudgetState, error) {
	if l.Tokens < 0 || l.Cost < 0 {
		return BudgetState{}, perr.New(CodeBadLimit, "pass limits >= 0 (0: no limit)", "budget %s: %d tokens, $%v", s, l.Tokens, l.Cost)
	}
	return b.change(ctx, s, func(st *BudgetState) { st.Limit = l })
}

func (b *Budget) change(ctx context.Context, s Scope, fn func(*BudgetState)) (BudgetState, error) {
	if err := s.validate(); err != nil {
		return BudgetState{}, err
	}
	kv, err := b.kv.get(ctx)
	if err != nil {
		return BudgetState{}, err
	}
	var out BudgetState
	_, err = update(ctx, kv, b.key(s), func(cur []byte) ([]byte, error) {
		st, err := decodeBudget(cur, s)
		if err != nil {
			return nil, err
		}
		fn(&st)
		st.Updated = time.Now().UTC()
		out = st
		return json.Marshal(st)
	})
	return out, err
}

// List returns every budget of the namespace.
func (b *Budget) List(ctx context.Context) ([]BudgetState, error) {
	kv, err := b.kv.get(ctx)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeysFiltered(ctx, b.ns+".>")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, perr.Wrap(err, events.CodeStoreIO, "", "cannot list budgets")
	}
	var out []BudgetState
	for k := range lister.Keys() {
		entry, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var st BudgetState
		if json.Unmarshal(entry.Value(), &st) == nil {
			out = append(out, st)
		}
	}
	return out, nil
}
