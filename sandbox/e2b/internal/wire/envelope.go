// Package wire holds the E2B wire format shared by the client (package e2b)
// and the fake server (package e2bfake): Connect envelopes, header and path
// names, and the JSON messages of the control plane and of envd. Keeping one
// copy means the fake and the client cannot drift apart silently; the byte
// shapes are pinned by tests against samples recorded from envd 0.6.13.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Envelope flags of the Connect protocol.
const (
	FlagMessage    byte = 0x00 // a normal message
	FlagCompressed byte = 0x01 // compressed payload (never used: compression is off)
	FlagEndStream  byte = 0x02 // the last envelope: {} or {"error":{...}}
)

// EnvelopeHeaderLen is the flags byte plus the 4-byte big-endian length.
const EnvelopeHeaderLen = 5

// MaxEnvelopeBytes bounds one envelope's payload. envd's largest message is a
// 32 KiB output chunk (about 44 KiB once base64-encoded in JSON); anything
// near this limit is a corrupt or hostile stream.
const MaxEnvelopeBytes = 4 << 20

// ErrEnvelopeTooLarge is returned by ReadEnvelope for a length over the limit.
var ErrEnvelopeTooLarge = errors.New("connect envelope larger than the limit")

// AppendEnvelope appends one envelope (flags, length, payload) to dst.
func AppendEnvelope(dst []byte, flags byte, payload []byte) []byte {
	var hdr [EnvelopeHeaderLen]byte
	hdr[0] = flags
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	dst = append(dst, hdr[:]...)
	return append(dst, payload...)
}

// WriteEnvelope writes one envelope to w in a single Write call, so that
// concurrent writers serialised by a mutex never interleave partial frames.
func WriteEnvelope(w io.Writer, flags byte, payload []byte) error {
	_, err := w.Write(AppendEnvelope(make([]byte, 0, EnvelopeHeaderLen+len(payload)), flags, payload))
	return err
}

// ReadEnvelope reads one envelope from r. It returns io.EOF only when r ends
// exactly at an envelope boundary; a stream cut inside a header or a payload
// gives io.ErrUnexpectedEOF. A declared length over maxBytes gives
// ErrEnvelopeTooLarge without reading (or allocating for) the payload.
func ReadEnvelope(r io.Reader, maxBytes uint32) (flags byte, payload []byte, err error) {
	var hdr [EnvelopeHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err // io.EOF at a boundary, io.ErrUnexpectedEOF inside the header
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxBytes {
		return 0, nil, fmt.Errorf("%w: %d bytes declared, limit %d", ErrEnvelopeTooLarge, n, maxBytes)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], payload, nil
}
