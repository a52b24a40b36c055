package executor

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/embed"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/perr"
)

// Task is the payload of a work-queue message: "advance this run".
type Task struct {
	RunID  string `json:"run_id"`
	Reason string `json:"reason,omitempty"`
}

// TaskSubject is the work-queue subject of a queue.
func TaskSubject(ns, queue string) string { return "polos." + ns + ".task." + queue }

// TopicSubject is the subject events on a WaitForEvent topic are published to.
func TopicSubject(ns, topic string) string { return "polos." + ns + ".event." + topic }

// Enqueue publishes a task for run on queue. dedupe, when set, is the
// Nats-Msg-Id: a second task with the same id within the dedupe window is
// dropped by the server.
func Enqueue(ctx context.Context, js jetstream.JetStream, ns, queue, runID, reason, dedupe string) error {
	data, _ := json.Marshal(Task{RunID: runID, Reason: reason})
	opts := []jetstream.PublishOpt{}
	if dedupe != "" {
		opts = append(opts, jetstream.WithMsgID(dedupe))
	}
	if _, err := js.Publish(ctx, TaskSubject(ns, queueOrDefault(queue)), data, opts...); err != nil {
		return perr.Wrap(err, events.CodeStoreIO, "check that the NATS server is up (polosd running?)", "cannot queue run %s", runID)
	}
	return nil
}

func queueOrDefault(q string) string {
	if q == "" {
		return "default"
	}
	return q
}

// effects implements replay.Effects on JetStream.
type effects struct {
	store *events.Store
	js    jetstream.JetStream
	ns    string
	queue string // the run's queue, for its wake-ups
}

func (f *effects) ScheduleWake(ctx context.Context, runID, key string, at time.Time) error {
	data, _ := json.Marshal(Task{RunID: runID, Reason: "wake:" + key})
	msg := nats.NewMsg("polos." + f.ns + ".sched." + runID + "." + key)
	msg.Data = data
	msg.Header.Set("Nats-Schedule", "@at "+at.UTC().Format(time.RFC3339Nano))
	msg.Header.Set("Nats-Schedule-Target", TaskSubject(f.ns, queueOrDefault(f.queue)))
	msg.Header.Set(jetstream.MsgIDHeader, "sched:"+runID+":"+key+":"+at.UTC().Format(time.RFC3339Nano))
	if _, err := f.js.PublishMsg(ctx, msg); err != nil {
		return perr.Wrap(err, events.CodeStoreIO, "check that the NATS server is up", "cannot schedule wake-up %s of run %s", key, runID)
	}
	return nil
}

func (f *effects) StartChild(ctx context.Context, parentID, childID, workflow string, input json.RawMessage, queue string) error {
	if queue == "" {
		queue = workflow
	}
	ev := &events.Event{Type: events.RunStarted, Data: input, Attrs: map[string]string{"workflow": workflow, "parent": parentID, "queue": queue}}
	if _, err := f.store.Append(ctx, childID, 0, ev); err != nil && perr.CodeOf(err) != events.CodeRunExists {
		return err
	}
	return Enqueue(ctx, f.js, f.ns, queue, childID, "start", "start:"+childID)
}

func (f *effects) ChildOutcome(ctx context.Context, childID string) (*events.Event, error) {
	hist, err := f.store.Load(ctx, childID, 0)
	if err != nil {
		return nil, err
	}
	for i := len(hist) - 1; i >= 0; i-- {
		if hist[i].Type.IsTerminal() {
			return &hist[i], nil
		}
	}
	return nil, nil
}

func (f *effects) TopicLastSeq(ctx context.Context, topic string) (uint64, error) {
	s, err := f.js.Stream(ctx, embed.EventsStream)
	if err != nil {
		return 0, perr.Wrap(err, events.CodeStoreIO, "", "events stream unavailable")
	}
	m, err := s.GetLastMsgForSubject(ctx, TopicSubject(f.ns, topic))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, perr.Wrap(err, events.CodeStoreIO, "", "cannot read topic %s", topic)
	}
	return m.Sequence, nil
}

func (f *effects) TopicEventAfter(ctx context.Context, topic string, seq uint64) ([]byte, bool, error) {
	s, err := f.js.Stream(ctx, embed.EventsStream)
	if err != nil {
		return nil, false, perr.Wrap(err, events.CodeStoreIO, "", "events stream unavailable")
	}
	m, err := s.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(TopicSubject(f.ns, topic)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, perr.Wrap(err, events.CodeStoreIO, "", "cannot read topic %s", topic)
	}
	return m.Data, true, nil
}

func (f *effects) RegisterWaiter(ctx context.Context, topic, runID string) error {
	kv, err := f.js.KeyValue(ctx, embed.WaitersKV)
	if err != nil {
		return perr.Wrap(err, events.CodeStoreIO, "run polosd once to provision the server", "waiters bucket unavailable")
	}
	q, _ := json.Marshal(map[string]string{"queue": f.queue})
	if _, err := kv.Put(ctx, WaiterKey(f.ns, topic, runID), q); err != nil {
		return perr.Wrap(err, events.CodeStoreIO, "", "cannot register waiter for topic %s", topic)
	}
	return nil
}

// WaiterKey is the KV key recording that runID waits on topic.
func WaiterKey(ns, topic, runID string) string { return ns + "." + topic + "." + runID }

// WaiterFilter selects every waiter on topic.
func WaiterFilter(ns, topic string) string { return ns + "." + topic + ".*" }

// RunIDFromWaiterKey extracts the run ID (the last token).
func RunIDFromWaiterKey(k string) string { return k[strings.LastIndexByte(k, '.')+1:] }
