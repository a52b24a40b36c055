package protocol

import (
	"context"
	"encoding/json"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/internal/perr"
)

// Task is the payload of a work-queue message: "advance this run".
type Task struct {
	RunID  string `json:"run_id"`
	Reason string `json:"reason,omitempty"`
}

// Enqueue publishes a task for run on queue. dedupe, when set, is the
// Nats-Msg-Id: a second task with the same id within the dedupe window is
// dropped by the server.
func Enqueue(ctx context.Context, js jetstream.JetStream, ns, queue, runID, reason, dedupe string) error {
	data, _ := json.Marshal(Task{RunID: runID, Reason: reason})
	opts := []jetstream.PublishOpt{}
	if dedupe != "" {
		opts = append(opts, jetstream.WithMsgID(dedupe))
	}
	if _, err := js.Publish(ctx, TaskSubject(ns, queue), data, opts...); err != nil {
		return perr.Wrap(err, CodeStoreIO, "check that the NATS server is up (polosd running?)", "cannot queue run %s", runID)
	}
	return nil
}
