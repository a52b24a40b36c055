package executor

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// effects implements replay.Effects on JetStream.
type effects struct {
	store *events.Store
	js    jetstream.JetStream
	ns    string
	queue string // the run's queue, for its wake-ups
}

func (f *effects) ScheduleWake(ctx context.Context, runID, key string, at time.Time) error {
	data, _ := json.Marshal(protocol.Task{RunID: runID, Reason: "wake:" + key})
	msg := nats.NewMsg(protocol.SchedSubject(f.ns, runID, key))
	msg.Data = data
	msg.Header.Set("Nats-Schedule", "@at "+at.UTC().Format(time.RFC3339Nano))
	msg.Header.Set("Nats-Schedule-Target", protocol.TaskSubject(f.ns, f.queue))
	msg.Header.Set(jetstream.MsgIDHeader, "sched:"+runID+":"+key+":"+at.UTC().Format(time.RFC3339Nano))
	// Retried under the store's policy: the Msg-Id makes a retry a no-op
	// when the first attempt landed.
	err := f.store.Retry().Do(ctx, "scheduling wake-up "+key+" of run "+runID, func(actx context.Context) error {
		_, err := f.js.PublishMsg(actx, msg)
		return err
	})
	if err != nil && perr.CodeOf(err) == "" {
		return perr.Wrap(err, events.CodeStoreIO, "check that the NATS server is up", "cannot schedule wake-up %s of run %s", key, runID)
	}
	return err
}

func (f *effects) StartChild(ctx context.Context, parentID, childID, workflow string, input json.RawMessage, queue string) error {
	if queue == "" {
		queue = workflow
	}
	ev := &events.Event{Type: events.RunStarted, Data: input, Attrs: map[string]string{"workflow": workflow, "parent": parentID, "queue": queue}}
	if _, err := f.store.Append(ctx, childID, events.Tip{}, ev); err != nil && perr.CodeOf(err) != events.CodeRunExists {
		return err
	}
	return protocol.EnqueueWith(ctx, f.js, f.store.Retry(), f.ns, queue, childID, "start", "start:"+childID)
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
	s, err := f.js.Stream(ctx, protocol.EventsStream)
	if err != nil {
		return 0, perr.Wrap(err, events.CodeStoreIO, "", "events stream unavailable")
	}
	m, err := s.GetLastMsgForSubject(ctx, protocol.TopicSubject(f.ns, topic))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, perr.Wrap(err, events.CodeStoreIO, "", "cannot read topic %s", topic)
	}
	return m.Sequence, nil
}

func (f *effects) TopicEventAfter(ctx context.Context, topic string, seq uint64) ([]byte, bool, error) {
	s, err := f.js.Stream(ctx, protocol.EventsStream)
	if err != nil {
		return nil, false, perr.Wrap(err, events.CodeStoreIO, "", "events stream unavailable")
	}
	m, err := s.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(protocol.TopicSubject(f.ns, topic)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, perr.Wrap(err, events.CodeStoreIO, "", "cannot read topic %s", topic)
	}
	return m.Data, true, nil
}

func (f *effects) RegisterWaiter(ctx context.Context, topic, runID string) error {
	kv, err := f.js.KeyValue(ctx, protocol.WaitersKV)
	if err != nil {
		return protocol.Unavailable(err, events.CodeStoreIO, "waiters bucket unavailable")
	}
	q, _ := json.Marshal(map[string]string{"queue": f.queue})
	if _, err := kv.Put(ctx, protocol.WaiterKey(f.ns, topic, runID), q); err != nil {
		return perr.Wrap(err, events.CodeStoreIO, "", "cannot register waiter for topic %s", topic)
	}
	return nil
}
