package protocol

import (
	"strconv"
	"strings"
)

// Subject tokens after polos.<ns>.
const (
	tokRun     = "run"
	tokTask    = "task"
	tokSched   = "sched"
	tokEvent   = "event"
	tokSandbox = "sandbox"
	tokStream  = "stream"
	tokCtl     = "ctl"
)

func nsPrefix(ns string) string { return "polos." + ns + "." }

// RunPrefix is "polos.<ns>.run.<p>.<runID>.": every event subject of the run
// starts with it.
func RunPrefix(ns, runID string) string {
	return nsPrefix(ns) + tokRun + "." + strconv.Itoa(RunPartition(runID)) + "." + runID + "."
}

// RunSubject is the subject of one event of type eventType of a run.
func RunSubject(ns, runID, eventType string) string { return RunPrefix(ns, runID) + eventType }

// RunFilter covers every event subject of a run.
func RunFilter(ns, runID string) string { return RunPrefix(ns, runID) + ">" }

// PartitionFilter covers every event of every run of namespace ns in
// partition p (one stream).
func PartitionFilter(ns string, p int) string {
	return nsPrefix(ns) + tokRun + "." + strconv.Itoa(p) + ".>"
}

// PartitionEventFilter covers every event of type eventType of every run of
// namespace ns in partition p.
func PartitionEventFilter(ns string, p int, eventType string) string {
	return nsPrefix(ns) + tokRun + "." + strconv.Itoa(p) + ".*." + eventType
}

// ParseRunSubject splits polos.<ns>.run.<p>.<runID>.<type>.
func ParseRunSubject(subject string) (ns, runID, eventType string, ok bool) {
	parts := strings.Split(subject, ".")
	if len(parts) != 6 || parts[0] != "polos" || parts[2] != tokRun {
		return "", "", "", false
	}
	return parts[1], parts[4], parts[5], true
}

// WakeDedupe is the Nats-Msg-Id of the task that wakes run runID for the
// signal stored at sequence seq of its stream: the signal's writer and
// the waker queue the same task, and the server keeps one.
func WakeDedupe(runID string, seq uint64) string {
	return "wake:" + runID + ":" + strconv.FormatUint(seq, 10)
}

// RunsFilter covers every run event of namespace ns, in every partition.
func RunsFilter(ns string) string { return nsPrefix(ns) + tokRun + ".>" }

// TaskSubject is the work-queue subject of a queue.
func TaskSubject(ns, queue string) string {
	return nsPrefix(ns) + tokTask + "." + QueueOrDefault(queue)
}

// QueueOfTaskSubject is the queue of a task subject polos.<ns>.task.<queue>
// ("" when subject is not one).
func QueueOfTaskSubject(subject string) string {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != "polos" || parts[2] != tokTask {
		return ""
	}
	return parts[3]
}

// TasksFilter covers every task queue of a namespace.
func TasksFilter(ns string) string { return nsPrefix(ns) + tokTask + ".>" }

// SchedSubject is the subject of a durable timer of a run.
func SchedSubject(ns, runID, key string) string {
	return nsPrefix(ns) + tokSched + "." + runID + "." + key
}

// TopicSubject is the subject events on a WaitForEvent topic are published to.
func TopicSubject(ns, topic string) string { return nsPrefix(ns) + tokEvent + "." + topic }

// SandboxSubject is the subject of op on provider's sandboxes.
func SandboxSubject(ns, provider, op string) string {
	return nsPrefix(ns) + tokSandbox + "." + provider + "." + op
}

// SandboxFilter covers every sandbox request of a namespace.
func SandboxFilter(ns string) string { return nsPrefix(ns) + tokSandbox + ".>" }

// SandboxQueueGroup is the queue group of the hosts serving provider.
func SandboxQueueGroup(provider string) string { return "polos-sandbox-" + provider }

// DeltaSubject carries a run's live token deltas (core NATS, not stored).
func DeltaSubject(ns, runID string) string { return nsPrefix(ns) + tokStream + "." + runID }

// DeltasFilter covers the live deltas of every run of a namespace.
func DeltasFilter(ns string) string { return nsPrefix(ns) + tokStream + ".>" }

// ControlSubject is the subject on which identity asks polosd's control
// service for op (start, resume, cancel, ...). NATS permissions let each
// operator identity publish only under its own name, so the service reads
// the requester's verified identity from the subject.
func ControlSubject(ns, identity, op string) string {
	return nsPrefix(ns) + tokCtl + "." + identity + "." + op
}

// ControlFilter covers every control request of a namespace.
func ControlFilter(ns string) string { return nsPrefix(ns) + tokCtl + ".*.*" }

// ControlIdentityFilter covers the control requests of one identity.
func ControlIdentityFilter(ns, identity string) string {
	return nsPrefix(ns) + tokCtl + "." + identity + ".>"
}

// ControlQueueGroup is the queue group of the control service.
const ControlQueueGroup = "polos-control"

// ParseControlSubject splits polos.<ns>.ctl.<identity>.<op>.
func ParseControlSubject(subject string) (ns, identity, op string, ok bool) {
	parts := strings.Split(subject, ".")
	if len(parts) != 5 || parts[0] != "polos" || parts[2] != tokCtl {
		return "", "", "", false
	}
	return parts[1], parts[3], parts[4], true
}

// ParseSandboxSubject splits polos.<ns>.sandbox.<provider>.<op>.
func ParseSandboxSubject(subject string) (ns, provider, op string, ok bool) {
	parts := strings.Split(subject, ".")
	if len(parts) != 5 || parts[0] != "polos" || parts[2] != tokSandbox {
		return "", "", "", false
	}
	return parts[1], parts[3], parts[4], true
}

// InboxPrefix is the reply-inbox prefix of connections of role: each role
// may subscribe only under its own prefix, so no identity can read the
// replies another role receives (KV values, sandbox output, control
// answers). Clients of a role must use nats.CustomInboxPrefix(InboxPrefix(role)).
func InboxPrefix(role Role) string { return "_INBOX_" + string(role) }

// DirectGetSubject is the JetStream direct-get API subject of a stream.
func DirectGetSubject(stream string) string { return jsAPI + "DIRECT.GET." + stream }
