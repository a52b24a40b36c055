package protocol

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/polos-run/polos/internal/perr"
)

// Reading without consumers. Direct get is the only read the untrusted
// roles (operator, observer) are allowed (see jsRead): it cannot change
// anything, and it creates nothing on the server, so a reader that dies
// leaks nothing.

// DefaultDirectTimeout bounds one direct get when ctx has no deadline.
const DefaultDirectTimeout = 10 * time.Second

// directGetRequest is the JetStream direct-get API request body.
type directGetRequest struct {
	Seq        uint64 `json:"seq,omitempty"`
	NextBySubj string `json:"next_by_subj,omitempty"`
	LastBySubj string `json:"last_by_subj,omitempty"`
	Batch      int    `json:"batch,omitempty"`
}

// Stored is one message read by direct get.
type Stored struct {
	Subject string
	Seq     uint64
	Time    time.Time
	Header  nats.Header
	Data    []byte
}

// DirectBatch reads up to n messages of stream matching filter (wildcards
// allowed), starting at sequence from, with one batched direct get.
// pending is how many matching messages remain after the batch.
func DirectBatch(ctx context.Context, nc *nats.Conn, stream, filter string, from uint64, n int) (msgs []Stored, pending uint64, err error) {
	if from == 0 {
		from = 1
	}
	req, _ := json.Marshal(directGetRequest{Seq: from, NextBySubj: filter, Batch: n})
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, 0, perr.Wrap(err, CodeStoreIO, "check the NATS connection", "cannot read %s", stream)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(DirectGetSubject(stream), inbox, req); err != nil {
		return nil, 0, perr.Wrap(err, CodeStoreIO, "check the NATS connection", "cannot read %s", stream)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultDirectTimeout)
	}
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, perr.Wrap(ctx.Err(), CodeStoreIO, "", "reading %s cancelled", stream)
			}
			return nil, 0, perr.Wrap(err, CodeStoreIO, "check that the NATS server is up (polosd running?) and that this identity may read "+stream,
				"reading %s timed out", stream)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204": // end of batch
			pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			return msgs, pending, nil
		case "404":
			return msgs, 0, nil
		default:
			return nil, 0, perr.New(CodeStoreIO, "check the server logs", "direct get on %s answered status %s %s", stream, status, m.Header.Get("Description"))
		}
		seq, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Time-Stamp"))
		msgs = append(msgs, Stored{Subject: m.Header.Get("Nats-Subject"), Seq: seq, Time: ts, Header: m.Header, Data: m.Data})
		if n == 1 && m.Header.Get("Nats-Num-Pending") == "" {
			return msgs, 0, nil
		}
	}
}

// DirectLast reads the last message of stream on subject (no wildcards);
// found is false when there is none.
func DirectLast(ctx context.Context, nc *nats.Conn, stream, subject string) (Stored, bool, error) {
	req, _ := json.Marshal(directGetRequest{LastBySubj: subject})
	timeout := DefaultDirectTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	m, err := nc.Request(DirectGetSubject(stream), req, timeout)
	if err != nil {
		return Stored{}, false, perr.Wrap(err, CodeStoreIO, "check that the NATS server is up and that this identity may read "+stream, "cannot read %s on %s", subject, stream)
	}
	switch status := m.Header.Get("Status"); status {
	case "":
	case "404":
		return Stored{}, false, nil
	default:
		return Stored{}, false, perr.New(CodeStoreIO, "check the server logs", "direct get on %s answered status %s %s", stream, status, m.Header.Get("Description"))
	}
	seq, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	return Stored{Subject: subject, Seq: seq, Header: m.Header, Data: m.Data}, true, nil
}

// objectInfo is the part of an object store entry's metadata a reader needs.
type objectInfo struct {
	NUID    string `json:"nuid"`
	Size    uint64 `json:"size"`
	Chunks  uint32 `json:"chunks"`
	Digest  string `json:"digest"`
	Deleted bool   `json:"deleted,omitempty"`
}

// ReadObject reads object name of object store bucket with direct gets
// only (the metadata, then the chunks in batches), checking its size and
// SHA-256 digest. found is false when there is no such object.
func ReadObject(ctx context.Context, nc *nats.Conn, bucket, name string) (data []byte, found bool, err error) {
	stream := ObjectStream(bucket)
	meta, ok, err := DirectLast(ctx, nc, stream, "$O."+bucket+".M."+base64.URLEncoding.EncodeToString([]byte(name)))
	if err != nil || !ok {
		return nil, false, err
	}
	var info objectInfo
	if err := json.Unmarshal(meta.Data, &info); err != nil || info.Deleted || info.NUID == "" {
		return nil, false, nil
	}
	chunks := "$O." + bucket + ".C." + info.NUID
	var seq uint64
	for uint64(len(data)) < info.Size {
		msgs, _, err := DirectBatch(ctx, nc, stream, chunks, seq+1, 64)
		if err != nil {
			return nil, true, err
		}
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			data = append(data, m.Data...)
			seq = m.Seq
		}
	}
	sum := sha256.Sum256(data)
	want := strings.TrimPrefix(info.Digest, "SHA-256=")
	if uint64(len(data)) != info.Size || (want != "" && want != base64.URLEncoding.EncodeToString(sum[:])) {
		return nil, true, perr.New(CodeStoreIO, "restore the object store from backup", "object %s of %s is incomplete or damaged (%d of %d bytes)", name, bucket, len(data), info.Size)
	}
	return data, true, nil
}
