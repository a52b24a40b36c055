package embed

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/internal/perr"
)

// Names of everything Polos provisions. They are part of the public contract
// (documented in README "NATS subjects and streams").
const (
	RunsStream   = "POLOS_RUNS"      // prefix of the run-history partitions POLOS_RUNS_<p>: polos.<ns>.run.<p>.<runID>.<event>
	TasksStream  = "POLOS_TASKS"     // work queue: polos.<ns>.task.<queue>, timers: polos.<ns>.sched.<runID>.<key>
	EventsStream = "POLOS_EVENTS"    // topics for WaitForEvent: polos.<ns>.event.<topic>
	RunsKV       = "polos_runs"      // derived run index (rebuildable from POLOS_RUNS)
	GrantsKV     = "polos_grants"    // allow-always grants
	WaitersKV    = "polos_waiters"   // runs waiting on an event topic: <ns>.<topic>.<runID>
	LeasesKV     = "polos_leases"    // which executor owns a run right now: <ns>.<runID>
	WorkflowsKV  = "polos_workflows" // workflows executors serve: <ns>.<name> -> queue, limit
	SessionsKV   = "polos_sessions"  // agent conversations across runs: <ns>.<agent>.<session>
	SlotsKV      = "polos_slots"     // queue concurrency slots: <ns>.<queue>.<key>
	RatesKV      = "polos_rates"     // rate-limit token buckets: <provider key>.<model>
	BudgetsKV    = "polos_budgets"   // token and cost budgets: <ns>.<scope kind>.<id>
	BlobStore    = "polos_blobs"     // large payloads by sha256
)

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

// ExecutorConsumer is the durable pull consumer all executors of a
// namespace share.
func ExecutorConsumer(ns string) string { return "polos_executors_" + ns }

// StreamConfigs returns the stream configurations Polos needs. replicas is 1
// for the embedded server and typically 3 on a cluster.
func StreamConfigs(replicas int) []jetstream.StreamConfig {
	if replicas < 1 {
		replicas = 1
	}
	var cfgs []jetstream.StreamConfig
	for p := 0; p < RunPartitions; p++ {
		cfgs = append(cfgs, jetstream.StreamConfig{
			Name:               RunsStreamName(p),
			Description:        "Polos run histories, partition " + strconv.Itoa(p) + " (the source of truth)",
			Subjects:           []string{"polos.*.run." + strconv.Itoa(p) + ".>"},
			Storage:            jetstream.FileStorage,
			Retention:          jetstream.LimitsPolicy,
			Discard:            jetstream.DiscardNew, // a full store refuses writes; it never drops history
			Duplicates:         DefaultDedupeWindow,
			AllowDirect:        true,
			AllowAtomicPublish: true,
			Replicas:           replicas,
		})
	}
	return append(cfgs, []jetstream.StreamConfig{
		{
			Name:              TasksStream,
			Description:       "Polos work queue and durable timers",
			Subjects:          []string{"polos.*.task.>", "polos.*.sched.>"},
			Storage:           jetstream.FileStorage,
			Retention:         jetstream.WorkQueuePolicy,
			Duplicates:        DefaultDedupeWindow,
			AllowMsgSchedules: true,
			AllowRollup:       true,
			Replicas:          replicas,
		},
		{
			Name:        EventsStream,
			Description: "Polos event topics (WaitForEvent)",
			Subjects:    []string{"polos.*.event.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      DefaultEventsMaxAge,
			Duplicates:  DefaultDedupeWindow,
			AllowDirect: true,
			Replicas:    replicas,
		},
	}...)
}

// Provision creates or verifies every stream, KV bucket and the object
// store, and the executor consumer of namespace ns. It is idempotent: on an
// existing deployment with the same configuration it changes nothing. A
// difference in a field the server can update is updated; one it cannot
// (storage, retention) is reported as CodeDrift naming the field.
func Provision(ctx context.Context, js jetstream.JetStream, ns string, replicas int) error {
	for _, want := range StreamConfigs(replicas) {
		if err := ensureStream(ctx, js, want); err != nil {
			return err
		}
	}
	for _, kv := range []jetstream.KeyValueConfig{
		{Bucket: RunsKV, Description: "Polos run index (derived)", Storage: jetstream.FileStorage, Replicas: max(replicas, 1), History: 1},
		{Bucket: GrantsKV, Description: "Polos allow-always grants", Storage: jetstream.FileStorage, Replicas: max(replicas, 1), History: 5},
		{Bucket: SessionsKV, Description: "Polos agent sessions", Storage: jetstream.FileStorage, Replicas: max(replicas, 1), History: 1},
		{Bucket: WorkflowsKV, Description: "Polos workflows and agents served", Storage: jetstream.FileStorage, Replicas: max(replicas, 1), History: 1},
		{Bucket: LeasesKV, Description: "Polos run ownership leases", Storage: jetstream.FileStorage, Replicas: max(replicas, 1), History: 1},
		{Bucket: WaitersKV, Description: "Polos runs waiting on event topics", Storage: jetstream.FileStorage, Replicas: max(replicas, 1), History: 1},
		{Bucket: SlotsKV, Description: "Polos queue concurrency slots", Storage: jetstream.FileStorage, Replicas: max(replicas, 1), History: 1},
		{Bucket: RatesKV, Description: "Polos rate-limit token buckets", Storage: jetstream.FileStorage, Replicas: max(replicas, 1), History: 1},
		{Bucket: BudgetsKV, Description: "Polos token and cost budgets", Storage: jetstream.FileStorage, Replicas: max(replicas, 1), History: 1},
	} {
		if _, err := js.KeyValue(ctx, kv.Bucket); err == nil {
			continue
		} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return perr.Wrap(err, CodeDrift, "check the NATS server", "cannot look up KV bucket %s", kv.Bucket)
		}
		if _, err := js.CreateKeyValue(ctx, kv); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return perr.Wrap(err, CodeDrift, "check JetStream limits and permissions", "cannot create KV bucket %s", kv.Bucket)
		}
	}
	if _, err := js.ObjectStore(ctx, BlobStore); err != nil {
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return perr.Wrap(err, CodeDrift, "check the NATS server", "cannot look up object store %s", BlobStore)
		}
		if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: BlobStore, Description: "Polos large payloads by sha256", Storage: jetstream.FileStorage, Replicas: max(replicas, 1)}); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return perr.Wrap(err, CodeDrift, "check JetStream limits and permissions", "cannot create object store %s", BlobStore)
		}
	}
	return ensureConsumer(ctx, js, ns)
}

// ExecutorConsumerConfig is the shared durable pull consumer of namespace ns.
func ExecutorConsumerConfig(ns string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ExecutorConsumer(ns),
		Description:   "Polos executors of namespace " + ns,
		FilterSubject: "polos." + ns + ".task.>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       DefaultTaskAckWait,
		MaxDeliver:    -1,
		MaxAckPending: DefaultMaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

func ensureConsumer(ctx context.Context, js jetstream.JetStream, ns string) error {
	want := ExecutorConsumerConfig(ns)
	c, err := js.Consumer(ctx, TasksStream, want.Durable)
	if err == nil {
		got := c.CachedInfo().Config
		if got.AckWait == want.AckWait && got.FilterSubject == want.FilterSubject && got.MaxAckPending == want.MaxAckPending {
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return perr.Wrap(err, CodeDrift, "check the NATS server", "cannot look up consumer %s", want.Durable)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, TasksStream, want); err != nil {
		return perr.Wrap(err, CodeDrift, "delete the consumer with `nats consumer rm "+TasksStream+" "+want.Durable+"` and restart", "cannot create or update consumer %s", want.Durable)
	}
	return nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return perr.Wrap(err, CodeDrift, "check JetStream is enabled and has room", "cannot create stream %s", want.Name)
		}
		return nil
	}
	if err != nil {
		return perr.Wrap(err, CodeDrift, "check the NATS server", "cannot look up stream %s", want.Name)
	}
	got := s.CachedInfo().Config
	if got.Storage != want.Storage {
		return perr.New(CodeDrift, "back up and recreate the stream, or point Polos at another server",
			"stream %s has storage %v, Polos needs %v (the server cannot change it in place)", want.Name, got.Storage, want.Storage)
	}
	if got.Retention != want.Retention {
		return perr.New(CodeDrift, "back up and recreate the stream, or point Polos at another server",
			"stream %s has retention %v, Polos needs %v (the server cannot change it in place)", want.Name, got.Retention, want.Retention)
	}
	if diff := driftFields(got, want); diff != "" {
		if _, err := js.UpdateStream(ctx, want); err != nil {
			return perr.Wrap(err, CodeDrift, "update the stream by hand to match, or recreate it",
				"stream %s differs from what Polos needs (%s) and could not be updated", want.Name, diff)
		}
	}
	return nil
}

// driftFields lists the updatable fields where got differs from want.
func driftFields(got, want jetstream.StreamConfig) string {
	var diffs []string
	check := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			diffs = append(diffs, fmt.Sprintf("%s: have %v, want %v", name, a, b))
		}
	}
	check("subjects", got.Subjects, want.Subjects)
	check("discard", got.Discard, want.Discard)
	check("duplicates", got.Duplicates, want.Duplicates)
	check("allow_direct", got.AllowDirect, want.AllowDirect)
	check("allow_atomic", got.AllowAtomicPublish, want.AllowAtomicPublish)
	check("allow_msg_schedules", got.AllowMsgSchedules, want.AllowMsgSchedules)
	check("max_age", got.MaxAge, want.MaxAge)
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprint(diffs)
}
