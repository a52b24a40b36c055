package protocol

import (
	"strconv"
	"time"
)

// Names of everything Polos provisions. They are part of the public
// contract (docs/subjects.md).
const (
	RunsStream   = "POLOS_RUNS"      // prefix of the run-history partitions POLOS_RUNS_<p>
	TasksStream  = "POLOS_TASKS"     // work queue polos.<ns>.task.<queue>, timers polos.<ns>.sched.<runID>.<key>
	EventsStream = "POLOS_EVENTS"    // topics for WaitForEvent: polos.<ns>.event.<topic>
	RunsKV       = "polos_runs"      // derived run index (rebuildable from POLOS_RUNS_<p>): <ns>.<runID>
	GrantsKV     = "polos_grants"    // allow-always grants
	WaitersKV    = "polos_waiters"   // runs waiting on event topics: <ns>.<topic>.<runID>
	LeasesKV     = "polos_leases"    // which executor owns a run right now: <ns>.<runID>
	WorkflowsKV  = "polos_workflows" // workflows executors serve: <ns>.<name> -> queue, limit
	SessionsKV   = "polos_sessions"  // agent conversations across runs: <ns>.<agent>.<session>
	SlotsKV      = "polos_slots"     // queue concurrency slots: <ns>.<queue>.<key>
	RatesKV      = "polos_rates"     // rate-limit token buckets: <provider key>.<model>
	BudgetsKV    = "polos_budgets"   // token and cost budgets: <ns>.<scope kind>.<id>
	BlobStore    = "polos_blobs"     // large payloads by sha256
)

// KVBuckets lists every KV bucket Polos provisions.
var KVBuckets = []string{RunsKV, GrantsKV, SessionsKV, WorkflowsKV, LeasesKV, WaitersKV, SlotsKV, RatesKV, BudgetsKV}

// DefaultNamespace is the namespace when none is given.
const DefaultNamespace = "default"

// DefaultQueue is the task queue of a run that names none.
const DefaultQueue = "default"

// Provisioning defaults.
const (
	// DefaultTaskAckWait bounds how long a task owned by a dead executor
	// stays invisible: another executor gets it after this long. Live
	// executors heartbeat (InProgress) every DefaultTaskAckWait/3.
	DefaultTaskAckWait   = 1500 * time.Millisecond
	DefaultDedupeWindow  = 2 * time.Minute
	DefaultEventsMaxAge  = 7 * 24 * time.Hour
	DefaultMaxAckPending = 10_000
)

// RunPartitions is how many streams hold run histories. A run lives in
// partition RunPartition(runID), stream RunsStreamName(p), subjects
// polos.<ns>.run.<p>.<runID>.<event>. With fsync on every write a stream
// stores one message at a time, so partitions are what let concurrent runs
// use the disk in parallel (docs/adr/0005-run-partitions.md). Every client,
// executor and subscriber must agree on it: it is part of the subject
// contract, not a tuning knob.
const RunPartitions = 4

// RunPartition is the partition of a run: FNV-1a (32-bit) of the run ID,
// modulo RunPartitions.
func RunPartition(runID string) int {
	h := uint32(2166136261)
	for i := 0; i < len(runID); i++ {
		h ^= uint32(runID[i])
		h *= 16777619
	}
	return int(h % RunPartitions)
}

// RunsStreamName is the stream of partition p: POLOS_RUNS_<p>.
func RunsStreamName(p int) string { return RunsStream + "_" + strconv.Itoa(p) }

// RunsStreamOf is the stream holding run runID.
func RunsStreamOf(runID string) string { return RunsStreamName(RunPartition(runID)) }

// RunsStreams lists the run-history streams, partition 0 first.
func RunsStreams() []string {
	out := make([]string, RunPartitions)
	for p := range out {
		out[p] = RunsStreamName(p)
	}
	return out
}

// WakerConsumer is the durable consumer of run partition p through which
// polosd's waker queues a run for every signal appended to it
// (executor.Waker).
func WakerConsumer(ns string, p int) string { return "polos_waker_" + ns + "_" + strconv.Itoa(p) }

// TelemetryConsumer is the durable consumer of run partition p through which
// polosd's server role turns every appended event into OpenTelemetry spans
// and Prometheus metrics (packages tracing and metrics). It exists only
// where tracing or the HTTP API (which serves /metrics) is on.
func TelemetryConsumer(ns string, p int) string { return "polos_telemetry_" + ns + "_" + strconv.Itoa(p) }

// ExecutorConsumer is the durable pull consumer all executors of a
// namespace share.
func ExecutorConsumer(ns string) string { return "polos_executors_" + ns }

// KVStream is the stream behind KV bucket b (a JetStream convention).
func KVStream(bucket string) string { return "KV_" + bucket }

// ObjectStream is the stream behind object store b (a JetStream convention).
func ObjectStream(bucket string) string { return "OBJ_" + bucket }

// QueueOrDefault is queue, or DefaultQueue when empty.
func QueueOrDefault(queue string) string {
	if queue == "" {
		return DefaultQueue
	}
	return queue
}

// AllStreams lists every stream Polos provisions: the run partitions, the
// tasks and events streams, the KV buckets' and the object store's.
func AllStreams() []string {
	out := append(RunsStreams(), TasksStream, EventsStream)
	for _, b := range KVBuckets {
		out = append(out, KVStream(b))
	}
	return append(out, ObjectStream(BlobStore))
}
