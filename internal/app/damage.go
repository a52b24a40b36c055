package app

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/protocol"
)

// VerifyHint is the next step after a run stream lost messages.
const VerifyHint = "polos verify --all"

// LogStreamLosses logs one ERROR line for each POLOS_RUNS_<p> stream whose
// state says it lost messages (nats-server marks the messages of a
// truncated block file deleted when it recovers the stream, and Polos never
// deletes from run streams: protocol.RunsStreamLosses), naming the stream,
// the lost sequences and VerifyHint. It returns how many streams lost
// messages. A failure to read the states is logged as a warning: it is a
// check, not a start condition.
func LogStreamLosses(ctx context.Context, js jetstream.JetStream, log *slog.Logger) int {
	losses, _, err := protocol.RunsStreamLosses(ctx, js)
	if err != nil {
		log.Warn("could not check the run streams for lost messages; run `"+VerifyHint+"`", "err", err)
		return 0
	}
	for _, l := range losses {
		log.Error(fmt.Sprintf("DAMAGE: %s; the histories of the runs they belonged to are missing events; run `%s` to find them", l, VerifyHint),
			"stream", l.Stream, "lost_seqs", protocol.SeqRanges(l.Seqs), "lost", len(l.Seqs), "lost_bytes", l.Bytes, "next", VerifyHint)
	}
	return len(losses)
}
