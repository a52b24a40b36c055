package protocol

import (
	"slices"
	"sort"
)

// Role is what an identity may do on the wire. Every identity belongs to
// one namespace (one NATS account per namespace, so streams, KV buckets and
// subjects of other namespaces do not exist for it) and has one role, whose
// permissions the NATS server enforces.
type Role string

// Roles.
const (
	// RoleServer is polosd itself: provisioning, the control service, the
	// HTTP API, and (in one process) executors and a sandbox host.
	RoleServer Role = "server"
	// RoleExecutor advances runs: appends to run subjects, takes tasks,
	// owns leases, slots and rate limits, talks to sandbox hosts.
	RoleExecutor Role = "executor"
	// RoleSandbox serves sandbox requests and nothing else.
	RoleSandbox Role = "sandbox"
	// RoleOperator is a person or program that starts, decides, cancels
	// and reads runs: it writes only through the control service, which
	// records the operator's identity.
	RoleOperator Role = "operator"
	// RoleObserver reads run events and nothing else.
	RoleObserver Role = "observer"
)

// Roles lists every role, most privileged first.
var Roles = []Role{RoleServer, RoleExecutor, RoleSandbox, RoleOperator, RoleObserver}

// ValidRole reports whether r names a role.
func ValidRole(r Role) bool { return slices.Contains(Roles, r) }

// Permissions are the subjects an identity may publish and subscribe to,
// as the NATS server enforces them (server.Permissions, or a
// nats-server.conf `permissions` block). Deny wins over allow.
// AllowResponses lets the identity reply to requests it received (and
// nothing else when PubAllow is empty).
type Permissions struct {
	PubAllow       []string
	PubDeny        []string
	SubAllow       []string
	SubDeny        []string
	AllowResponses bool
}

// JetStream API subject prefixes (nats-server's jetstream_api.go).
const (
	jsAPI = "$JS.API."
	jsAck = "$JS.ACK."
	jsFC  = "$JS.FC.>"
)

// jsRead is what reading a stream without a consumer takes: stream info
// and direct get (by sequence, by subject, batched). No consumer may be
// created: a push consumer's deliver subject is not checked against the
// creator's permissions, so a consumer could re-publish stored events onto
// any subject of the account (another run's history, a task queue).
func jsRead(stream string) []string {
	return []string{
		jsAPI + "STREAM.INFO." + stream,
		jsAPI + "DIRECT.GET." + stream,
		jsAPI + "DIRECT.GET." + stream + ".>",
	}
}

// jsConsume is what reading a stream through consumers takes, for the
// trusted roles (ordered consumers for long histories, KV watches, object
// store reads).
func jsConsume(stream string) []string {
	return append(jsRead(stream),
		jsAPI+"STREAM.MSG.GET."+stream,
		jsAPI+"CONSUMER.CREATE."+stream,
		jsAPI+"CONSUMER.CREATE."+stream+".>",
		jsAPI+"CONSUMER.INFO."+stream+".*",
		jsAPI+"CONSUMER.DELETE."+stream+".*",
		jsAPI+"CONSUMER.MSG.NEXT."+stream+".*",
	)
}

// polosStreams are every stream behind Polos's assets.
func polosStreams() []string {
	out := append(RunsStreams(), TasksStream, EventsStream, ObjectStream(BlobStore))
	for _, b := range KVBuckets {
		out = append(out, KVStream(b))
	}
	return out
}

// readableStreams are the streams readers (operator, observer) may read
// with direct gets: the run histories, the blobs they reference, and the
// run index derived from them (read by `polos verify` and `polos status`
// to find a history that lost messages the index recorded).
func readableStreams() []string {
	return append(RunsStreams(), ObjectStream(BlobStore), KVStream(RunsKV))
}

// readerSubscriptions are the core subjects readers may subscribe to: run
// events and live deltas. The namespace token is a wildcard so that the
// documented `nats sub 'polos.*.run.*.*.suspended'` works; the account of
// the namespace holds no other namespace's messages, and only the server
// and executor roles publish there, each in its own namespace.
var readerSubscriptions = []string{"polos.*." + tokRun + ".>", "polos.*." + tokStream + ".>"}

// RolePermissions returns the permissions of an identity of role in
// namespace ns; identity is the identity's name (an operator may publish
// control requests under its own name only). An unknown role gets nothing.
func RolePermissions(role Role, ns, identity string) Permissions {
	inbox := InboxPrefix(role) + ".>"
	switch role {
	case RoleServer:
		return Permissions{PubAllow: []string{">"}, SubAllow: []string{">"}}
	case RoleExecutor:
		p := Permissions{
			PubAllow: []string{
				RunsFilter(ns), TasksFilter(ns), nsPrefix(ns) + tokSched + ".>",
				SandboxFilter(ns), DeltasFilter(ns),
				"$O." + BlobStore + ".>",
				jsAPI + "INFO", jsFC,
				jsAck + TasksStream + "." + ExecutorConsumer(ns) + ".>",
				LivenessFilter(ns),
			},
			// Liveness: an executor answers probes on its own subject
			// (the replies go to the prober's inbox) and probes others.
			SubAllow:       []string{inbox, RunsFilter(ns), LivenessFilter(ns)},
			AllowResponses: true,
		}
		for _, b := range KVBuckets {
			p.PubAllow = append(p.PubAllow, "$KV."+b+".>")
		}
		for _, s := range polosStreams() {
			p.PubAllow = append(p.PubAllow, jsConsume(s)...)
		}
		return p.normal()
	case RoleSandbox:
		return Permissions{SubAllow: []string{SandboxFilter(ns)}, AllowResponses: true}.normal()
	case RoleOperator:
		p := Permissions{
			PubAllow: append([]string{ControlIdentityFilter(ns, identity), jsAPI + "INFO"}, PresenceFilters(ns)...),
			SubAllow: append([]string{inbox}, readerSubscriptions...),
		}
		for _, s := range readableStreams() {
			p.PubAllow = append(p.PubAllow, jsRead(s)...)
		}
		return p.normal()
	case RoleObserver:
		p := Permissions{
			PubAllow: append([]string{jsAPI + "INFO"}, PresenceFilters(ns)...),
			SubAllow: append([]string{inbox}, readerSubscriptions...),
		}
		for _, s := range readableStreams() {
			p.PubAllow = append(p.PubAllow, jsRead(s)...)
		}
		return p.normal()
	}
	return Permissions{PubDeny: []string{">"}, SubDeny: []string{">"}}
}

// normal sorts and de-duplicates, so permission sets compare and print
// stably (docs, generated server configs, tests).
func (p Permissions) normal() Permissions {
	for _, l := range []*[]string{&p.PubAllow, &p.PubDeny, &p.SubAllow, &p.SubDeny} {
		sort.Strings(*l)
		*l = slices.Compact(*l)
	}
	return p
}
