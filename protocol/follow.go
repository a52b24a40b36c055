package protocol

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/polos-run/polos/perr"
)

// Follower defaults.
const (
	// FollowBatch is how many messages one direct get of a follower reads.
	FollowBatch = 256
	// FollowIdlePoll bounds how long a follower waits for a wake-up before
	// it reads again anyway (a wake-up lost in a reconnect costs at most this).
	FollowIdlePoll = time.Second
)

// followRetries are the delays of the reads after a wake-up that found
// nothing yet: a core subscriber can hear of a message before the stream
// has stored it.
var followRetries = []time.Duration{200 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 100 * time.Millisecond}

// Follower delivers the messages of a stream that match a filter, after a
// sequence, in order, with no gap and no duplicate, by batched direct
// gets, woken by a core subscription on the same filter. It creates no
// consumer (so it needs only read permission and leaks nothing when its
// process dies) and survives reconnects: a lost wake-up delays delivery by
// at most FollowIdlePoll.
type Follower struct {
	r      *DirectReader
	stream string
	filter string
	next   uint64
	buf    []Stored
	wake   chan struct{}
	subs   []*nats.Subscription
}

// NewFollower follows stream's messages matching filter with a sequence
// above after. It reads when a message is published on one of wakeOn
// (default: filter itself), and every FollowIdlePoll: a caller that only
// cares about some messages (a run's end) wakes only for those and reads
// the rest in passing.
func NewFollower(r *DirectReader, stream, filter string, after uint64, wakeOn ...string) (*Follower, error) {
	nc := r.Conn()
	f := &Follower{r: r, stream: stream, filter: filter, next: after + 1, wake: make(chan struct{}, 1)}
	if len(wakeOn) == 0 {
		wakeOn = []string{filter}
	}
	for _, subj := range wakeOn {
		sub, err := nc.Subscribe(subj, func(*nats.Msg) {
			select {
			case f.wake <- struct{}{}:
			default:
			}
		})
		if err != nil {
			f.Stop()
			return nil, perr.Wrap(err, CodeStoreIO, "check that this identity may subscribe to "+subj, "cannot follow %s", subj)
		}
		f.subs = append(f.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		f.Stop()
		return nil, perr.Wrap(err, CodeStoreIO, "check the NATS connection", "cannot follow %s", filter)
	}
	return f, nil
}

// Next returns the next message, waiting for one until ctx is done.
func (f *Follower) Next(ctx context.Context) (Stored, error) {
	retry := 0
	for {
		if len(f.buf) > 0 {
			m := f.buf[0]
			f.buf = f.buf[1:]
			return m, nil
		}
		msgs, _, err := f.r.Batch(ctx, f.stream, f.filter, f.next, FollowBatch)
		if err != nil {
			return Stored{}, err
		}
		if len(msgs) > 0 {
			f.buf = msgs
			f.next = msgs[len(msgs)-1].Seq + 1
			retry = 0
			continue
		}
		wait := FollowIdlePoll
		if retry > 0 && retry <= len(followRetries) {
			wait = followRetries[retry-1]
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Stored{}, ctx.Err()
		case <-f.wake:
			t.Stop()
			retry = 1
		case <-t.C:
			if retry > 0 {
				retry++
			}
		}
		if retry > len(followRetries) {
			retry = 0
		}
	}
}

// Stop ends the wake-up subscriptions.
func (f *Follower) Stop() {
	for _, s := range f.subs {
		_ = s.Unsubscribe()
	}
}
