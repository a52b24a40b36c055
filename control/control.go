// Package control is polosd's control service: the one door through which
// operators (protocol.RoleOperator) change runs. A request arrives on
// polos.<ns>.ctl.<identity>.<op>; the NATS server lets each operator
// credential publish under its own identity only, so the identity in the
// subject is verified, and it is what a decision records as decided_by
// ("operator:<identity>"), whatever the request says.
//
// The service does the writes with polosd's own connection and context:
// a caller that gives up (a timeout, a closed terminal) after the service
// accepted a request never leaves a change half made (a decision stored
// but its run never woken).
//
// Failure behaviour: a malformed request is answered with a coded error
// (BAD_INPUT) saying what was expected; a panic is recovered and answered
// as INTERNAL; a request without a reply subject is dropped (nobody could
// learn the outcome). At most DefaultMaxConcurrent requests run at once;
// more wait in the subscription.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"sort"
	"sync"

	"github.com/nats-io/nats.go"

	"time"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/ratelimit"
)

// Defaults.
const (
	DefaultMaxConcurrent = 64
	// DefaultOpTimeout bounds one request's work on the service's side.
	DefaultOpTimeout = 60 * time.Second
)

// DecidedByPrefix starts the decided_by of a decision made through the
// control service.
const DecidedByPrefix = "operator:"

// Options configure the service.
type Options struct {
	// Client writes directly (polosd's own identity). Required.
	Client *client.Client
	Grants *hitl.Grants      // nil: grant requests answer NOT_SUPPORTED
	Budget *ratelimit.Budget // nil: budget requests answer NOT_SUPPORTED
	Logger *slog.Logger
}

// CodeNotSupported: this service was started without what the request needs.
const CodeNotSupported perr.Code = "NOT_SUPPORTED"

// Service serves control requests of one namespace.
type Service struct {
	o      Options
	nc     *nats.Conn
	ns     string
	sub    *nats.Subscription
	sem    chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Serve subscribes to the namespace's control subjects (queue group
// protocol.ControlQueueGroup, so several polosd processes share them) and
// serves until Close.
func Serve(o Options) (*Service, error) {
	if o.Client == nil {
		return nil, errors.New("control: Options.Client is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{o: o, nc: o.Client.Conn(), ns: o.Client.Namespace(), sem: make(chan struct{}, DefaultMaxConcurrent), ctx: ctx, cancel: cancel}
	sub, err := s.nc.QueueSubscribe(protocol.ControlFilter(s.ns), protocol.ControlQueueGroup, s.dispatch)
	if err != nil {
		cancel()
		return nil, perr.Wrap(err, protocol.CodeStoreIO, "check the NATS connection and polosd's permissions", "cannot serve %s", protocol.ControlFilter(s.ns))
	}
	s.sub = sub
	if err := s.nc.Flush(); err != nil {
		s.Close()
		return nil, perr.Wrap(err, protocol.CodeStoreIO, "check the NATS connection", "cannot confirm the control subscription")
	}
	return s, nil
}

// Close stops taking requests and waits for those in progress (they finish:
// their changes are never left half made).
func (s *Service) Close() {
	if s.sub != nil {
		_ = s.sub.Unsubscribe()
	}
	s.wg.Wait()
	s.cancel()
}

func (s *Service) dispatch(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	select {
	case s.sem <- struct{}{}:
	case <-s.ctx.Done():
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sem }()
		reply := s.serve(m)
		b, err := json.Marshal(reply)
		if err != nil {
			b, _ = json.Marshal(protocol.ControlReply{Error: protocol.ToWire(err, protocol.CodeInternal)})
		}
		_ = m.Respond(b)
	}()
}

var identityPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// serve decodes and runs one request; it never panics.
func (s *Service) serve(m *nats.Msg) (r protocol.ControlReply) {
	defer func() {
		if p := recover(); p != nil {
			s.o.Logger.Error("control request panicked", "subject", m.Subject, "panic", p)
			r = protocol.ControlReply{Error: protocol.ToWire(perr.New(protocol.CodeInternal, "report this bug with the request that caused it", "the control service panicked serving %s: %v", m.Subject, p), protocol.CodeInternal)}
		}
	}()
	ns, identity, op, ok := protocol.ParseControlSubject(m.Subject)
	if !ok || ns != s.ns || !identityPattern.MatchString(identity) {
		return fail(perr.New(client.CodeBadInput, "send control requests to polos.<ns>.ctl.<identity>.<op>", "subject %q is not a control subject of namespace %s", m.Subject, s.ns))
	}
	if len(m.Data) > protocol.MaxControlRequest {
		return fail(perr.New(client.CodeBadInput, "send less", "the %s request is %d bytes, over %d", op, len(m.Data), protocol.MaxControlRequest))
	}
	ctx, cancel := context.WithTimeout(s.ctx, DefaultOpTimeout)
	defer cancel()
	h, ok := handlers[op]
	if !ok {
		return fail(perr.New(client.CodeBadInput, "use one of: "+opNames(), "unknown control operation %q", op))
	}
	res, err := h(ctx, s, caller{Identity: identity}, m.Data)
	if err != nil {
		if perr.CodeOf(err) == "" {
			s.o.Logger.Warn("control request failed", "op", op, "identity", identity, "err", err)
		}
		return fail(err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return fail(perr.Wrap(err, protocol.CodeInternal, "", "cannot encode the %s result", op))
	}
	return protocol.ControlReply{Result: b}
}

func fail(err error) protocol.ControlReply {
	return protocol.ControlReply{Error: protocol.ToWire(err, protocol.CodeInternal)}
}

// caller is who sent a request, as the subject (and so the server) says.
type caller struct{ Identity string }

func (c caller) decidedBy() string { return DecidedByPrefix + c.Identity }

type handler func(ctx context.Context, s *Service, c caller, data []byte) (any, error)

var handlers = map[string]handler{
	protocol.CtlWhoAmI:      whoAmI,
	protocol.CtlStart:       start,
	protocol.CtlResume:      resume,
	protocol.CtlCancel:      cancelRun,
	protocol.CtlPublish:     publish,
	protocol.CtlList:        list,
	protocol.CtlGrants:      grants,
	protocol.CtlRevokeGrant: revokeGrant,
	protocol.CtlBudgets:     budgets,
	protocol.CtlSetBudget:   setBudget,
	protocol.CtlRebuild:     rebuildIndex,
}

func opNames() string {
	var n []string
	for k := range handlers {
		n = append(n, k)
	}
	sort.Strings(n)
	b, _ := json.Marshal(n)
	return string(b)
}

// decode reads a request strictly: unknown fields are an error, so a typo
// (or a "decided_by" someone hoped would count) is reported, not ignored.
func decode(op string, data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return perr.Wrap(err, client.CodeBadInput, "send the "+op+" request as documented in docs/subjects.md (control requests)", "malformed %s request", op)
	}
	return nil
}

func whoAmI(_ context.Context, s *Service, c caller, _ []byte) (any, error) {
	return protocol.WhoAmIReply{Namespace: s.ns, Identity: c.Identity, DecidedBy: c.decidedBy()}, nil
}

func start(ctx context.Context, s *Service, _ caller, data []byte) (any, error) {
	var r protocol.StartRequest
	if err := decode("start", data, &r); err != nil {
		return nil, err
	}
	var input any
	if len(r.Input) > 0 {
		if !json.Valid(r.Input) {
			return nil, perr.New(client.CodeBadInput, "pass valid JSON input", "the run input is not valid JSON")
		}
		input = r.Input
	}
	id, created, err := s.o.Client.Start(ctx, r.Workflow, input, client.StartOptionsOf(r))
	if err != nil {
		return nil, err
	}
	return protocol.StartReply{ID: id, Created: created}, nil
}

func resume(ctx context.Context, s *Service, c caller, data []byte) (any, error) {
	var r protocol.ResumeRequest
	if err := decode("resume", data, &r); err != nil {
		return nil, err
	}
	if err := events.ValidateID("run ID", r.RunID); err != nil {
		return nil, err
	}
	return s.o.Client.Resume(ctx, r.RunID, r.StepKey, client.Decision{Data: r.Data, DecidedBy: c.decidedBy(), Validate: hitl.Validate})
}

func cancelRun(ctx context.Context, s *Service, _ caller, data []byte) (any, error) {
	var r protocol.RunRequest
	if err := decode("cancel", data, &r); err != nil {
		return nil, err
	}
	if err := events.ValidateID("run ID", r.RunID); err != nil {
		return nil, err
	}
	return struct{}{}, s.o.Client.Cancel(ctx, r.RunID)
}

func publish(ctx context.Context, s *Service, _ caller, data []byte) (any, error) {
	var r protocol.PublishRequest
	if err := decode("publish", data, &r); err != nil {
		return nil, err
	}
	if len(r.Data) == 0 || !json.Valid(r.Data) {
		return nil, perr.New(client.CodeBadInput, "pass the event data as JSON", "the event data is not valid JSON")
	}
	return struct{}{}, s.o.Client.PublishEvent(ctx, r.Topic, r.Data)
}

func list(ctx context.Context, s *Service, _ caller, data []byte) (any, error) {
	var r protocol.ListRequest
	if err := decode("list", data, &r); err != nil {
		return nil, err
	}
	l, err := s.o.Client.ListRuns(ctx, client.ListFilter{Status: r.Status, Agent: r.Agent, Limit: r.Limit})
	if err != nil {
		return nil, err
	}
	if l.Runs == nil {
		l.Runs = []events.Summary{}
	}
	runs, err := json.Marshal(l.Runs)
	if err != nil {
		return nil, err
	}
	reply := protocol.ListReply{Runs: runs}
	if len(l.Unreadable) > 0 {
		reply.Unreadable, err = json.Marshal(l.Unreadable)
	}
	return reply, err
}

func rebuildIndex(ctx context.Context, s *Service, _ caller, _ []byte) (any, error) {
	return s.o.Client.RebuildIndex(ctx)
}

func grants(ctx context.Context, s *Service, _ caller, data []byte) (any, error) {
	if s.o.Grants == nil {
		return nil, perr.New(CodeNotSupported, "", "this polosd serves no grants")
	}
	var r protocol.GrantsRequest
	if err := decode("grants", data, &r); err != nil {
		return nil, err
	}
	gs, err := s.o.Grants.List(ctx, hitl.GrantFilter{Scope: hitl.Scope(r.Scope), ScopeID: r.ScopeID, Kind: hitl.Kind(r.Kind)})
	if gs == nil {
		gs = []hitl.Grant{}
	}
	return gs, err
}

func revokeGrant(ctx context.Context, s *Service, _ caller, data []byte) (any, error) {
	if s.o.Grants == nil {
		return nil, perr.New(CodeNotSupported, "", "this polosd serves no grants")
	}
	var r protocol.RevokeGrantRequest
	if err := decode("revoke_grant", data, &r); err != nil {
		return nil, err
	}
	return s.o.Grants.Revoke(ctx, r.ID)
}

func budgetScope(b protocol.BudgetScope) (ratelimit.Scope, error) {
	return ratelimit.ParseScope(ratelimit.Scope{Kind: ratelimit.ScopeKind(b.Kind), ID: b.ID}.String())
}

func budgets(ctx context.Context, s *Service, _ caller, data []byte) (any, error) {
	if s.o.Budget == nil {
		return nil, perr.New(CodeNotSupported, "", "this polosd serves no budgets")
	}
	var r protocol.BudgetRequest
	if err := decode("budgets", data, &r); err != nil {
		return nil, err
	}
	if r.Scope == nil {
		return s.o.Budget.List(ctx)
	}
	sc, err := budgetScope(*r.Scope)
	if err != nil {
		return nil, err
	}
	st, err := s.o.Budget.Get(ctx, sc)
	return []ratelimit.BudgetState{st}, err
}

func setBudget(ctx context.Context, s *Service, c caller, data []byte) (any, error) {
	if s.o.Budget == nil {
		return nil, perr.New(CodeNotSupported, "", "this polosd serves no budgets")
	}
	var r protocol.SetBudgetRequest
	if err := decode("set_budget", data, &r); err != nil {
		return nil, err
	}
	sc, err := budgetScope(r.Scope)
	if err != nil {
		return nil, err
	}
	cur, err := s.o.Budget.Get(ctx, sc)
	if err != nil {
		return nil, err
	}
	l := cur.Limit
	if r.Tokens != nil {
		l.Tokens = *r.Tokens
	}
	if r.Cost != nil {
		l.Cost = *r.Cost
	}
	st, err := s.o.Budget.Set(ctx, sc, l)
	if err != nil {
		return nil, err
	}
	resumed, err := ResumePaused(ctx, s.o.Client, sc, c.decidedBy())
	b, _ := json.Marshal(st)
	return protocol.SetBudgetReply{Budget: b, Resumed: resumed}, err
}

// ResumePaused resumes every waiting run of the namespace whose budget
// form names scope. The run re-checks its budgets when it resumes, so a
// limit still too low pauses it again. It returns the resumed run IDs.
func ResumePaused(ctx context.Context, cl *client.Client, scope ratelimit.Scope, decidedBy string) ([]string, error) {
	sums, err := cl.List(ctx, client.ListFilter{Status: events.StatusWaiting})
	if err != nil {
		return nil, err
	}
	var resumed []string
	for _, s := range sums {
		for _, w := range s.Waiting {
			var form map[string]any
			if json.Unmarshal(w.Form, &form) != nil || form[ratelimit.FormSourceField] != ratelimit.FormSource || form[ratelimit.FormScopeField] != scope.String() {
				continue
			}
			data, _ := json.Marshal(map[string]any{"budget_raised": scope.String()})
			_, err := cl.Resume(ctx, s.ID, w.StepKey, client.Decision{Data: data, DecidedBy: decidedBy})
			switch perr.CodeOf(err) {
			case "", client.CodeAlreadyDecided, client.CodeStepNotWaiting, client.CodeRunFinished:
				if err == nil {
					resumed = append(resumed, s.ID)
				}
			default:
				return resumed, err
			}
		}
	}
	return resumed, nil
}
