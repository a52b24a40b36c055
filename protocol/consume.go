package protocol

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/perr"
)

// Defaults of PullEach.
const (
	// DefaultPullBatch is how many messages a PullEach loop asks for at once.
	DefaultPullBatch = 64
	// DefaultPullExpiry is how long one pull request waits for messages.
	DefaultPullExpiry = 5 * time.Second
)

// PullEach hands every message of the durable consumer durable on stream
// to handle, one at a time in stream order, until ctx ends. handle acks,
// naks or terminates each message itself.
//
// Under failure: opening the consumer fails with CodeStoreIO (the caller
// decides whether to retry); once it is open, pull errors (a broker
// restart, a leader election) are retried by the iterator, so the loop
// resumes where the consumer's ack floor is when the server is back.
func PullEach(ctx context.Context, js jetstream.JetStream, stream, durable string, handle func(jetstream.Msg)) error {
	cons, err := js.Consumer(ctx, stream, durable)
	if err != nil {
		return Unavailable(err, CodeStoreIO, "cannot open the consumer %s of %s", durable, stream)
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(DefaultPullBatch), jetstream.PullExpiry(DefaultPullExpiry))
	if err != nil {
		return perr.Wrap(err, CodeStoreIO, "", "cannot pull from %s", stream)
	}
	go func() { <-ctx.Done(); iter.Stop() }()
	for {
		msg, err := iter.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			continue
		}
		handle(msg)
	}
}
