package protocol

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/perr"
)

// StreamLoss is what a run stream's state says it lost. Polos never
// deletes a message from a POLOS_RUNS_<p> stream (no limits, no deletes),
// so every sequence the stream lists as deleted, and every one nats-server
// reports lost, is a message that was stored and is gone: when the server
// recovers a truncated block file, it keeps the stream's last sequence and
// marks the missing messages deleted (nats-server 2.15.2 logs "Stream state
// outdated, last block has additional entries, will rebuild" at WARN).
type StreamLoss struct {
	Stream string   `json:"stream"`
	Seqs   []uint64 `json:"seqs"`            // lost sequences, ascending
	Bytes  uint64   `json:"bytes,omitempty"` // bytes nats-server reports lost
	Msgs   uint64   `json:"msgs"`            // messages the stream counts
	First  uint64   `json:"first_seq"`
	Last   uint64   `json:"last_seq"`
}

// String renders l for a log line or a report.
func (l StreamLoss) String() string {
	return fmt.Sprintf("stream %s lost %d message(s) at seq %s", l.Stream, len(l.Seqs), SeqRanges(l.Seqs))
}

// RunsStreamLosses reads the state of every POLOS_RUNS_<p> stream (stream
// info with deleted details: what operators and observers may read) and
// returns each one's losses, streams without loss left out. States holds
// every stream's state (for a reader that checks each sequence).
func RunsStreamLosses(ctx context.Context, js jetstream.JetStream) (losses []StreamLoss, states []StreamLoss, err error) {
	for _, name := range RunsStreams() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return nil, nil, perr.Wrap(err, CodeStoreIO, "start polosd once to provision the server", "cannot read stream %s", name)
		}
		info, err := s.Info(ctx, jetstream.WithDeletedDetails(true))
		if err != nil {
			return nil, nil, perr.Wrap(err, CodeStoreIO, "check the NATS connection", "cannot read the state of stream %s", name)
		}
		st := info.State
		l := StreamLoss{Stream: name, Seqs: slices.Clone(st.Deleted), Msgs: st.Msgs, First: st.FirstSeq, Last: st.LastSeq}
		if st.Lost != nil {
			l.Seqs = append(l.Seqs, st.Lost.Msgs...)
			l.Bytes = st.Lost.Bytes
		}
		// nats-server 2.15.2 may list sequence 0 as lost for a stream it
		// recovered with no messages: no message ever has it.
		l.Seqs = slices.DeleteFunc(l.Seqs, func(s uint64) bool { return s == 0 })
		slices.Sort(l.Seqs)
		l.Seqs = slices.Compact(l.Seqs)
		states = append(states, l)
		if len(l.Seqs) > 0 {
			losses = append(losses, l)
		}
	}
	return losses, states, nil
}

// SeqRanges renders ascending sequences as ranges: "4-6, 9".
func SeqRanges(seqs []uint64) string {
	var b strings.Builder
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", seqs[i], seqs[j])
		} else {
			fmt.Fprintf(&b, "%d", seqs[i])
		}
		i = j + 1
	}
	return b.String()
}
