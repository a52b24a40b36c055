package protocol

import (
	"context"
	"encoding/json"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/perr"
)

// Task is the payload of a work-queue message: "advance this run".
type Task struct {
	RunID  string `json:"run_id"`
	Reason string `json:"reason,omitempty"`
}

// Enqueue publishes a task for run on queue. dedupe, when set, is the
// Nats-Msg-Id: a second task with the same id within the dedupe window is
// dropped by the server, which is what makes retrying it safe.
//
// Under failure: a store fault is retried as an append is (the default
// StoreRetry: backoff with jitter up to DefaultStoreRetryFor, or ctx's
// deadline); the error returned is coded (STORE_FULL, STORE_NO_QUORUM,
// STORE_UNAVAILABLE, ...).
func Enqueue(ctx context.Context, js jetstream.JetStream, ns, queue, runID, reason, dedupe string) error {
	return EnqueueWith(ctx, js, StoreRetry{}, ns, queue, runID, reason, dedupe)
}

// EnqueueWith is Enqueue under retry policy p (a store's Retry()).
func EnqueueWith(ctx context.Context, js jetstream.JetStream, p StoreRetry, ns, queue, runID, reason, dedupe string) error {
	data, _ := json.Marshal(Task{RunID: runID, Reason: reason})
	opts := []jetstream.PublishOpt{}
	if dedupe != "" {
		opts = append(opts, jetstream.WithMsgID(dedupe))
	}
	err := p.Do(ctx, "queueing run "+runID, func(actx context.Context) error {
		_, err := js.Publish(actx, TaskSubject(ns, queue), data, opts...)
		return err
	})
	if err != nil && perr.CodeOf(err) == "" {
		return perr.Wrap(err, CodeStoreIO, "check that the NATS server is up (polosd running?)", "cannot queue run %s", runID)
	}
	return err
}
