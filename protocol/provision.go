package protocol

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/perr"
)

// CodeDrift: an asset exists with a configuration Polos cannot use and the
// server cannot change in place, or provisioning was refused.
const CodeDrift perr.Code = "EMBED_CONFIG_DRIFT"

// CodeStoreIO: the NATS server did not answer a read or write.
const CodeStoreIO perr.Code = "STORE_UNAVAILABLE"

// DefaultReplicas is the replica count of an asset created when none is
// configured (ProvisionOptions.Replicas 0): one copy, as on one machine.
const DefaultReplicas = 1

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

// ProvisionOptions configure ProvisionWith.
type ProvisionOptions struct {
	// Replicas is how many copies of every stream, KV bucket and object
	// store (1 on one server, typically 3 on a cluster). Existing assets
	// with another count are scaled to it, up or down, whoever created
	// them. 0 means none is configured: new assets get DefaultReplicas and
	// existing ones keep their count (a process started without the
	// setting never scales a cluster's R3 assets down to one copy).
	Replicas int
	// OnChange, when set, is told of each asset provisioning changed to
	// match (created assets are not reported).
	OnChange func(asset, change string)
}

// Provision is ProvisionWith replicas (explicit, so enforced) and no change
// report.
func Provision(ctx context.Context, js jetstream.JetStream, ns string, replicas int) error {
	return ProvisionWith(ctx, js, ns, ProvisionOptions{Replicas: replicas})
}

// ProvisionWith creates or verifies every stream, KV bucket and the object
// store, and the consumers of namespace ns. It is idempotent: on an
// existing deployment with the same configuration it changes nothing. A
// difference in a field the server can update (the replica count among
// them, whoever created the asset) is updated and reported to OnChange;
// one it cannot (storage, retention) is reported as CodeDrift naming the
// field. Asking for more replicas than the cluster has servers is
// CodeDrift with the fix, not a hang.
func ProvisionWith(ctx context.Context, js jetstream.JetStream, ns string, o ProvisionOptions) error {
	configured := max(o.Replicas, 0)
	replicas := ReplicasFor(configured, 0) // of the assets created
	report := o.OnChange
	if report == nil {
		report = func(string, string) {}
	}
	for _, want := range StreamConfigs(replicas) {
		if err := ensureStream(ctx, js, want, configured, report); err != nil {
			return err
		}
	}
	for _, kv := range []jetstream.KeyValueConfig{
		{Bucket: RunsKV, Description: "Polos run index (derived)", Storage: jetstream.FileStorage, Replicas: replicas, History: 1},
		{Bucket: GrantsKV, Description: "Polos allow-always grants", Storage: jetstream.FileStorage, Replicas: replicas, History: 5},
		{Bucket: SessionsKV, Description: "Polos agent sessions", Storage: jetstream.FileStorage, Replicas: replicas, History: 1},
		{Bucket: WorkflowsKV, Description: "Polos workflows and agents served", Storage: jetstream.FileStorage, Replicas: replicas, History: 1},
		{Bucket: LeasesKV, Description: "Polos run ownership leases", Storage: jetstream.FileStorage, Replicas: replicas, History: 1},
		{Bucket: WaitersKV, Description: "Polos runs waiting on event topics", Storage: jetstream.FileStorage, Replicas: replicas, History: 1},
		{Bucket: SlotsKV, Description: "Polos queue concurrency slots", Storage: jetstream.FileStorage, Replicas: replicas, History: 1},
		{Bucket: RatesKV, Description: "Polos rate-limit token buckets", Storage: jetstream.FileStorage, Replicas: replicas, History: 1},
		{Bucket: BudgetsKV, Description: "Polos token and cost budgets", Storage: jetstream.FileStorage, Replicas: replicas, History: 1},
	} {
		if _, err := js.KeyValue(ctx, kv.Bucket); err == nil {
			if err := ensureReplicas(ctx, js, KVStream(kv.Bucket), configured, report); err != nil {
				return err
			}
			continue
		} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return perr.Wrap(err, CodeDrift, "check the NATS server", "cannot look up KV bucket %s", kv.Bucket)
		}
		if _, err := js.CreateKeyValue(ctx, kv); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return provisionErr(err, replicas, "KV bucket "+kv.Bucket)
		}
	}
	if _, err := js.ObjectStore(ctx, BlobStore); err == nil {
		if err := ensureReplicas(ctx, js, ObjectStream(BlobStore), configured, report); err != nil {
			return err
		}
	} else {
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return perr.Wrap(err, CodeDrift, "check the NATS server", "cannot look up object store %s", BlobStore)
		}
		if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: BlobStore, Description: "Polos large payloads by sha256", Storage: jetstream.FileStorage, Replicas: replicas}); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return provisionErr(err, replicas, "object store "+BlobStore)
		}
	}
	if err := ensureConsumer(ctx, js, TasksStream, ExecutorConsumerConfig(ns)); err != nil {
		return err
	}
	for p := 0; p < RunPartitions; p++ {
		if err := ensureConsumer(ctx, js, RunsStreamName(p), WakerConsumerConfig(ns, p)); err != nil {
			return err
		}
	}
	return nil
}

// JetStream API error codes of a replica count the server cannot meet.
const (
	jsErrReplicasNotSupported = 10074 // replicas > 1 not supported in non-clustered mode
	jsErrClusterNoPeers       = 10005 // no peers for placement
)

// provisionErr names a create or update that failed, and says how to fix
// a replica count the server cannot meet.
func provisionErr(err error, replicas int, asset string) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && replicas > 1 && (apiErr.ErrorCode == jsErrReplicasNotSupported || apiErr.ErrorCode == jsErrClusterNoPeers ||
		strings.Contains(strings.ToLower(apiErr.Description), "replicas") || strings.Contains(strings.ToLower(apiErr.Description), "insufficient resources")) {
		return perr.Wrap(err, CodeDrift, "set replicas (polos.yaml server.replicas or --replicas) to at most the number of JetStream servers the cluster has up, or start more servers",
			"cannot give %s %d replicas", asset, replicas)
	}
	return perr.Wrap(err, CodeDrift, "check JetStream is enabled and has room", "cannot create or update %s", asset)
}

// ReplicasFor is the replica count an asset must have: the configured
// count when one is (configured > 0), else what the existing asset has
// (have > 0), else DefaultReplicas for a new one. It is the whole replica
// decision of provisioning, kept pure so a table can pin it.
func ReplicasFor(configured, have int) int {
	switch {
	case configured > 0:
		return configured
	case have > 0:
		return have
	}
	return DefaultReplicas
}

// ensureReplicas scales an existing stream (a KV bucket's, the object
// store's) to the configured replica count (ReplicasFor).
func ensureReplicas(ctx context.Context, js jetstream.JetStream, stream string, configured int, report func(asset, change string)) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return perr.Wrap(err, CodeDrift, "check the NATS server", "cannot look up stream %s", stream)
	}
	cfg := s.CachedInfo().Config
	replicas := ReplicasFor(configured, cfg.Replicas)
	if cfg.Replicas == replicas {
		return nil
	}
	change := fmt.Sprintf("replicas %d -> %d", cfg.Replicas, replicas)
	cfg.Replicas = replicas
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return provisionErr(err, replicas, "stream "+stream)
	}
	report(stream, change)
	return nil
}

// SignalEventTypes are the event types others than a run's executor append
// to its history (events.Type.IsSignal): each must wake the run.
var SignalEventTypes = []string{"resumed", "child_finished", "cancel_requested", "event_received"}

// DefaultWakerAckWait bounds how long a signal handed to a waker that died
// stays invisible to the others.
const DefaultWakerAckWait = 5 * time.Second

// WakerConsumerConfig is the durable consumer of partition p's signals
// (SignalEventTypes) that polosd's waker reads. It starts at the stream's
// first message when created, so signals recorded before it existed (or
// while no waker ran) still wake their runs.
func WakerConsumerConfig(ns string, p int) jetstream.ConsumerConfig {
	var filters []string
	for _, t := range SignalEventTypes {
		filters = append(filters, PartitionEventFilter(ns, p, t))
	}
	return jetstream.ConsumerConfig{
		Durable:        WakerConsumer(ns, p),
		Description:    "Polos waker: queues a run for each signal appended to it (namespace " + ns + ")",
		FilterSubjects: filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        DefaultWakerAckWait,
		MaxDeliver:     -1,
		MaxAckPending:  DefaultMaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
}

// DefaultTelemetryAckWait bounds how long an event handed to a telemetry
// follower that died unacknowledged waits before it is redelivered.
const DefaultTelemetryAckWait = 5 * time.Second

// TelemetryConsumerConfig is the durable consumer of every event of
// partition p for namespace ns's telemetry (traces and metrics). It starts
// at the events appended after it was created (telemetry switched on later
// does not cover old runs).
func TelemetryConsumerConfig(ns string, p int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       TelemetryConsumer(ns, p),
		Description:   "Polos telemetry: OpenTelemetry spans and metrics from run histories (namespace " + ns + ")",
		FilterSubject: PartitionFilter(ns, p),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       DefaultTelemetryAckWait,
		MaxDeliver:    -1,
		MaxAckPending: DefaultMaxAckPending,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
}

// ProvisionTelemetry creates (or repairs) the telemetry consumers of
// namespace ns, one per run partition. Provision does not: a namespace
// without telemetry keeps no consumer that would hold its events.
func ProvisionTelemetry(ctx context.Context, js jetstream.JetStream, ns string) error {
	for p := 0; p < RunPartitions; p++ {
		if err := ensureConsumer(ctx, js, RunsStreamName(p), TelemetryConsumerConfig(ns, p)); err != nil {
			return err
		}
	}
	return nil
}

// ExecutorConsumerConfig is the shared durable pull consumer of namespace ns.
func ExecutorConsumerConfig(ns string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ExecutorConsumer(ns),
		Description:   "Polos executors of namespace " + ns,
		FilterSubject: TasksFilter(ns),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       DefaultTaskAckWait,
		MaxDeliver:    -1,
		MaxAckPending: DefaultMaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

func ensureConsumer(ctx context.Context, js jetstream.JetStream, stream string, want jetstream.ConsumerConfig) error {
	c, err := js.Consumer(ctx, stream, want.Durable)
	if err == nil {
		got := c.CachedInfo().Config
		if got.AckWait == want.AckWait && got.FilterSubject == want.FilterSubject && slices.Equal(got.FilterSubjects, want.FilterSubjects) && got.MaxAckPending == want.MaxAckPending {
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return perr.Wrap(err, CodeDrift, "check the NATS server", "cannot look up consumer %s", want.Durable)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, stream, want); err != nil {
		return perr.Wrap(err, CodeDrift, "delete the consumer with `nats consumer rm "+stream+" "+want.Durable+"` and restart", "cannot create or update consumer %s", want.Durable)
	}
	return nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, configured int, report func(asset, change string)) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return provisionErr(err, want.Replicas, "stream "+want.Name)
		}
		return nil
	}
	if err != nil {
		return perr.Wrap(err, CodeDrift, "check the NATS server", "cannot look up stream %s", want.Name)
	}
	got := s.CachedInfo().Config
	want.Replicas = ReplicasFor(configured, got.Replicas)
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
			if want.Replicas > 1 && got.Replicas != want.Replicas {
				return provisionErr(err, want.Replicas, "stream "+want.Name)
			}
			return perr.Wrap(err, CodeDrift, "update the stream by hand to match, or recreate it",
				"stream %s differs from what Polos needs (%s) and could not be updated", want.Name, diff)
		}
		report(want.Name, diff)
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
	check("replicas", got.Replicas, want.Replicas)
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprint(diffs)
}
