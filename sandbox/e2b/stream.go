package e2b

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

// errTruncated means a Start stream ended without its 0x02 envelope: the
// connection was cut and the outcome of the command is unknown.
var errTruncated = errors.New("the stream ended without an end-of-stream envelope (connection cut)")

// startStream is what a process.Process/Start stream said so far. It is
// filled while reading, so after a failed read pid still tells which
// process to kill.
type startStream struct {
	pid     uint32
	started bool
	end     *wire.EndEvent     // the end event, if one came
	failure *wire.ConnectError // the error of the 0x02 envelope, if any
}

// read consumes envelopes from r until the end-of-stream envelope, writing
// output chunks to stdout and stderr (keepalives and pty data are ignored).
// It returns nil once a well-formed 0x02 envelope was read, errTruncated
// when r ends before it (wrapping io.ErrUnexpectedEOF if inside an
// envelope), and a protocol error for anything malformed. It never panics
// on hostile input (see FuzzStartStream).
func (s *startStream) read(r io.Reader, stdout, stderr io.Writer) error {
	for {
		flags, payload, err := wire.ReadEnvelope(r, wire.MaxEnvelopeBytes)
		switch {
		case err == io.EOF:
			return errTruncated
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("%w: %w", errTruncated, err)
		case err != nil:
			return err
		}
		switch flags {
		case wire.FlagMessage:
		case wire.FlagEndStream:
			var end wire.EndStream
			if err := json.Unmarshal(payload, &end); err != nil {
				return fmt.Errorf("malformed end-of-stream envelope %q: %w", clip(payload), err)
			}
			s.failure = end.Error
			return nil
		default:
			return fmt.Errorf("unexpected envelope flags %#x (compression is never requested)", flags)
		}
		var msg wire.StartResponse
		if err := json.Unmarshal(payload, &msg); err != nil {
			return fmt.Errorf("malformed stream message %q: %w", clip(payload), err)
		}
		ev := msg.Event
		switch {
		case ev.Start != nil:
			s.pid, s.started = ev.Start.Pid, true
		case ev.Data != nil:
			stdout.Write(ev.Data.Stdout)
			stderr.Write(ev.Data.Stderr)
		case ev.End != nil:
			s.end = ev.End
		}
	}
}

func clip(b []byte) string {
	const max = 200
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
