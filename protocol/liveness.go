package protocol

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Run ownership: the lease record in LeasesKV and the liveness probe that
// tells a live owner from a dead one (docs/adr/0010-liveness-not-expiry.md).
//
// A lease names the executor advancing a run. Its expiry alone never hands
// the run to another executor: a broker stall or a leader election stops
// every renewal at once, while the owners are alive and their steps in
// flight. An executor that finds an expired lease asks the owner first, on
// the owner's liveness subject; only an owner that is gone (the server
// answers "no responders": its connection, and with it its subscription,
// is closed) or that says it does not hold the run loses it.

// tokExec is the subject token of executor liveness subjects.
const tokExec = "exec"

// Liveness defaults.
const (
	// DefaultProbeTimeout bounds one liveness probe. A probe that times out
	// proves nothing (the broker or the owner may be stalled): the run
	// stays with its owner.
	DefaultProbeTimeout = 250 * time.Millisecond
	// DefaultReconnectGrace: for this long after the prober's own
	// connection reconnected, "no responders" proves nothing either. After
	// a broker restart every process reconnects at its own pace
	// (DefaultReconnectWait plus jitter); one that has not yet is not dead.
	DefaultReconnectGrace = 3 * time.Second
	// DefaultOwnerGoneFor is how long an owner must stay unanswered before
	// it is taken for gone: an executor whose cluster node died reconnects
	// to another node within a few hundred milliseconds, and "no
	// responders" is true of it meanwhile.
	DefaultOwnerGoneFor = 400 * time.Millisecond
)

// reconnects remembers, per connection, the reconnect count last seen and
// when it was first seen to change (recentlyReconnected).
var reconnects sync.Map // *nats.Conn -> reconnectMark

type reconnectMark struct {
	count uint64
	at    time.Time
}

// recentlyReconnected reports whether nc reconnected within
// DefaultReconnectGrace, as far as this process noticed: a change of its
// reconnect count is dated when first noticed, which only lengthens the
// grace.
func recentlyReconnected(nc *nats.Conn) bool {
	n := nc.Stats().Reconnects
	now := time.Now()
	v, ok := reconnects.Load(nc)
	if !ok {
		m := reconnectMark{count: n}
		if n > 0 {
			m.at = now
		}
		reconnects.Store(nc, m)
		return n > 0
	}
	m := v.(reconnectMark)
	if m.count != n {
		reconnects.Store(nc, reconnectMark{count: n, at: now})
		return true
	}
	return !m.at.IsZero() && now.Sub(m.at) < DefaultReconnectGrace
}

// LeaseRecord is the value of a run's key in LeasesKV.
type LeaseRecord struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
	// Queue is the run's task queue, so that whoever takes a dead owner's
	// runs away (the reaper) can queue them without reading their history.
	Queue string `json:"queue,omitempty"`
}

// ParseLeaseKey splits a LeasesKV key "<ns>.<runID>".
func ParseLeaseKey(key string) (ns, runID string, ok bool) {
	ns, runID, ok = strings.Cut(key, ".")
	return ns, runID, ok && ns != "" && runID != ""
}

// LivenessSubject is the subject on which executor owner of namespace ns
// answers liveness probes. An owner name that is not a valid subject token
// (a host name with dots) is replaced by a digest of it.
func LivenessSubject(ns, owner string) string {
	return nsPrefix(ns) + tokExec + "." + subjectToken(owner)
}

// LivenessFilter covers every liveness subject of a namespace.
func LivenessFilter(ns string) string { return nsPrefix(ns) + tokExec + ".>" }

var tokenPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func subjectToken(s string) string {
	if tokenPattern.MatchString(s) {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "h" + hex.EncodeToString(sum[:12])
}

// Probe asks an executor whether it is alive and holds a run.
type Probe struct {
	Owner string `json:"owner"`
	RunID string `json:"run_id,omitempty"`
}

// ProbeReply is an executor's answer to a Probe.
type ProbeReply struct {
	Owner string `json:"owner"`
	Holds bool   `json:"holds"`
}

// Liveness is what a probe found out.
type Liveness int

const (
	// OwnerUnknown: the probe timed out or failed; nothing is proven.
	OwnerUnknown Liveness = iota
	// OwnerGone: nobody listens on the owner's subject: its connection,
	// and with it its subscription, is closed.
	OwnerGone
	// OwnerIdle: the owner is alive and does not hold the run.
	OwnerIdle
	// OwnerHolds: the owner is alive and advancing the run.
	OwnerHolds
)

// ProbeOwner asks owner whether it holds runID (runID "" asks only whether
// it is alive: OwnerHolds then means alive). It waits at most
// DefaultProbeTimeout, or less when ctx ends first. Within
// DefaultReconnectGrace of nc's own reconnect, an owner nobody answers for
// is OwnerUnknown, not OwnerGone.
func ProbeOwner(ctx context.Context, nc *nats.Conn, ns, owner, runID string) Liveness {
	body, _ := json.Marshal(Probe{Owner: owner, RunID: runID})
	ctx, cancel := context.WithTimeout(ctx, DefaultProbeTimeout)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, LivenessSubject(ns, owner), body)
	if errors.Is(err, nats.ErrNoResponders) {
		if recentlyReconnected(nc) {
			return OwnerUnknown // the owner may not have reconnected yet
		}
		return OwnerGone
	}
	if err != nil {
		return OwnerUnknown
	}
	var r ProbeReply
	if json.Unmarshal(m.Data, &r) != nil {
		return OwnerUnknown
	}
	switch {
	case r.Owner != owner:
		return OwnerUnknown // not the owner's answer: prove nothing
	case r.Holds || runID == "":
		return OwnerHolds
	}
	return OwnerIdle
}

// ProbeOwnerConfirmed is ProbeOwner, except that an owner found gone is
// probed again DefaultOwnerGoneFor later and is OwnerGone only if it is
// still gone (an owner reconnecting to another cluster node is not gone).
func ProbeOwnerConfirmed(ctx context.Context, nc *nats.Conn, ns, owner, runID string) Liveness {
	live := ProbeOwner(ctx, nc, ns, owner, runID)
	if live != OwnerGone {
		return live
	}
	select {
	case <-ctx.Done():
		return OwnerUnknown
	case <-time.After(DefaultOwnerGoneFor):
	}
	return ProbeOwner(ctx, nc, ns, owner, runID)
}

// AnswerProbes subscribes on owner's liveness subject and answers each
// probe with holds(runID). The subscription lives as long as the
// connection (or until unsubscribed): it is the owner's liveness.
func AnswerProbes(nc *nats.Conn, ns, owner string, holds func(runID string) bool) (*nats.Subscription, error) {
	return nc.Subscribe(LivenessSubject(ns, owner), func(m *nats.Msg) {
		var p Probe
		if json.Unmarshal(m.Data, &p) != nil || m.Reply == "" {
			return
		}
		b, _ := json.Marshal(ProbeReply{Owner: owner, Holds: p.RunID != "" && holds(p.RunID)})
		_ = m.Respond(b)
	})
}

// Workflow presence: an executor that has a workflow answers on
// ServesSubject, so one that lacks it can tell "another live executor has
// it: hand the task back at once" from "nobody has it now: back off".

// ServesSubject is where the executors serving workflow answer presence
// probes (core NATS: no stored state; a dead executor's answer vanishes
// with its connection).
func ServesSubject(ns, workflow string) string {
	return nsPrefix(ns) + tokExec + ".wf." + subjectToken(workflow)
}

// BuildSubject is where the executors of build answer presence probes.
func BuildSubject(ns, build string) string {
	return nsPrefix(ns) + tokExec + ".build." + subjectToken(build)
}

// PresenceFilters cover the presence subjects of a namespace (workflows
// and builds), which readers may probe (`polos list --stuck`).
func PresenceFilters(ns string) []string {
	return []string{nsPrefix(ns) + tokExec + ".wf.>", nsPrefix(ns) + tokExec + ".build.>"}
}

// AnyoneServes reports whether a live executor serves workflow: some
// answer within DefaultProbeTimeout. Silence or "no responders" is false.
func AnyoneServes(ctx context.Context, nc *nats.Conn, ns, workflow string) bool {
	return present(ctx, nc, ServesSubject(ns, workflow))
}

// AnyoneRuns reports whether a live executor runs build.
func AnyoneRuns(ctx context.Context, nc *nats.Conn, ns, build string) bool {
	return present(ctx, nc, BuildSubject(ns, build))
}

func present(ctx context.Context, nc *nats.Conn, subject string) bool {
	ctx, cancel := context.WithTimeout(ctx, DefaultProbeTimeout)
	defer cancel()
	_, err := nc.RequestWithContext(ctx, subject, nil)
	return err == nil
}

// AnswerPresence answers presence probes for workflows and build on nc
// until the subscriptions end with the connection or are unsubscribed.
func AnswerPresence(nc *nats.Conn, ns string, workflows []string, build string) ([]*nats.Subscription, error) {
	subjects := []string{BuildSubject(ns, build)}
	for _, w := range workflows {
		subjects = append(subjects, ServesSubject(ns, w))
	}
	var subs []*nats.Subscription
	for _, subj := range subjects {
		s, err := nc.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond([]byte("{}")) })
		if err != nil {
			for _, s := range subs {
				_ = s.Unsubscribe()
			}
			return nil, err
		}
		subs = append(subs, s)
	}
	return subs, nil
}

// EnvBuildID overrides an executor's build ID (DefaultBuildID).
const EnvBuildID = "POLOS_BUILD_ID"

// DefaultBuildID identifies the code of this process: POLOS_BUILD_ID when
// set, else the main module's version and VCS revision from the Go build
// information ("+dirty" when built from a modified tree), else "dev".
func DefaultBuildID() string {
	if b := os.Getenv(EnvBuildID); b != "" {
		return b
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	id := info.Main.Version
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	switch {
	case rev != "":
		id = rev + dirty
	case id == "" || id == "(devel)":
		id = "dev"
	}
	return id
}
