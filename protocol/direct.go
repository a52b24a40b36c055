package protocol

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/perr"
)

// Reading without consumers. Direct get is the only read the untrusted
// roles (operator, observer) are allowed (see jsRead): it cannot change
// anything, and it creates nothing on the server, so a reader that dies
// leaks nothing.

// DefaultDirectTimeout bounds one direct get (a lost reply costs at most
// this, even under a longer ctx deadline).
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
	Stream  string
	Subject string
	Seq     uint64
	Time    time.Time
	Header  nats.Header
	Data    []byte
}

// DirectReader reads streams with direct gets over one connection. The
// replies of all its reads arrive on one wildcard subscription, demultiplexed
// by the last token of the reply subject, so a read costs one request and
// no SUB/UNSUB round of its own. Safe for concurrent use; it lives as long
// as its connection.
type DirectReader struct {
	nc *nats.Conn

	mu      sync.Mutex
	sub     *nats.Subscription
	prefix  string
	next    uint64
	waiting map[string]chan *nats.Msg
}

// NewDirectReader returns a reader on nc (the subscription is made at the
// first read).
func NewDirectReader(nc *nats.Conn) *DirectReader {
	return &DirectReader{nc: nc, waiting: map[string]chan *nats.Msg{}}
}

// Conn is the reader's connection.
func (r *DirectReader) Conn() *nats.Conn { return r.nc }

// replyBuffer bounds the replies of one read held before it takes them: a
// batch, its end-of-batch marker, and slack.
const replyBuffer = FollowBatch + 8

// open registers a read and returns its reply subject and channel.
func (r *DirectReader) open() (string, chan *nats.Msg, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sub == nil || !r.sub.IsValid() {
		r.prefix = r.nc.NewInbox()
		sub, err := r.nc.Subscribe(r.prefix+".*", r.route)
		if err != nil {
			return "", nil, err
		}
		r.sub = sub
	}
	r.next++
	token := strconv.FormatUint(r.next, 36)
	ch := make(chan *nats.Msg, replyBuffer)
	r.waiting[token] = ch
	return r.prefix + "." + token, ch, nil
}

func (r *DirectReader) done(reply string) {
	r.mu.Lock()
	delete(r.waiting, reply[strings.LastIndexByte(reply, '.')+1:])
	r.mu.Unlock()
}

// route hands a reply to its read; replies of a read that gave up, or
// beyond its buffer, are dropped (that read has already failed).
func (r *DirectReader) route(m *nats.Msg) {
	token := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	r.mu.Lock()
	ch := r.waiting[token]
	r.mu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default:
		}
	}
}

// Batch reads up to n (at most FollowBatch) messages of stream matching
// filter (wildcards allowed), starting at sequence from, with one batched
// direct get. pending is how many matching messages remain after the batch.
//
// Under failure: a stream that does not answer for a moment (status 503:
// JetStream restarting after a store fault, or a stream without a leader)
// is asked again under StoreRetry for up to DefaultStoreReadRetryFor;
// other errors come back at once.
func (r *DirectReader) Batch(ctx context.Context, stream, filter string, from uint64, n int) (msgs []Stored, pending uint64, err error) {
	err = StoreRetry{For: DefaultStoreReadRetryFor, Attempt: DefaultDirectTimeout}.Do(ctx, "reading "+stream, func(actx context.Context) error {
		var err error
		msgs, pending, err = r.batchOnce(actx, stream, filter, from, n)
		if err != nil && !errors.Is(err, errNoStream) {
			return Final(err)
		}
		return err
	})
	return msgs, pending, err
}

// errNoStream: a direct get answered 503 (no stream answered right now).
var errNoStream = errors.New("no stream answered (status 503)")

func (r *DirectReader) batchOnce(ctx context.Context, stream, filter string, from uint64, n int) (msgs []Stored, pending uint64, err error) {
	if from == 0 {
		from = 1
	}
	n = min(max(n, 1), FollowBatch)
	req, _ := json.Marshal(directGetRequest{Seq: from, NextBySubj: filter, Batch: n})
	reply, ch, err := r.open()
	if err != nil {
		return nil, 0, perr.Wrap(err, CodeStoreIO, "check the NATS connection", "cannot read %s", stream)
	}
	defer r.done(reply)
	if err := r.nc.PublishRequest(DirectGetSubject(stream), reply, req); err != nil {
		return nil, 0, perr.Wrap(err, CodeStoreIO, "check the NATS connection", "cannot read %s", stream)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultDirectTimeout)
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return nil, 0, perr.Wrap(ctx.Err(), CodeStoreIO, "", "reading %s cancelled", stream)
		case <-timer.C:
			// errors.Is(err, context.DeadlineExceeded) holds, as for ctx.
			return nil, 0, perr.Wrap(context.DeadlineExceeded, CodeStoreIO, "check that the NATS server is up (polosd running?) and that this identity may read "+stream,
				"reading %s timed out", stream)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204": // end of batch
			pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			return msgs, pending, nil
		case "404":
			return msgs, 0, nil
		case "503":
			return nil, 0, perr.Wrap(errNoStream, CodeStoreIO, "check the server logs", "direct get on %s", stream)
		default:
			return nil, 0, perr.New(CodeStoreIO, "check the server logs", "direct get on %s answered status %s %s", stream, status, m.Header.Get("Description"))
		}
		seq, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Time-Stamp"))
		msgs = append(msgs, Stored{Stream: m.Header.Get("Nats-Stream"), Subject: m.Header.Get("Nats-Subject"), Seq: seq, Time: ts, Header: m.Header, Data: m.Data})
		if n == 1 && m.Header.Get("Nats-Num-Pending") == "" {
			return msgs, 0, nil
		}
	}
}

// Last reads the last message of stream on subject (no wildcards);
// found is false when there is none.
func (r *DirectReader) Last(ctx context.Context, stream, subject string) (Stored, bool, error) {
	req, _ := json.Marshal(directGetRequest{LastBySubj: subject})
	timeout := DefaultDirectTimeout // a lost reply costs at most this, whatever ctx allows
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	m, err := r.nc.Request(DirectGetSubject(stream), req, timeout)
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
	return Stored{Stream: stream, Subject: subject, Seq: seq, Header: m.Header, Data: m.Data}, true, nil
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
func (r *DirectReader) ReadObject(ctx context.Context, bucket, name string) (data []byte, found bool, err error) {
	stream := ObjectStream(bucket)
	meta, ok, err := r.Last(ctx, stream, "$O."+bucket+".M."+base64.URLEncoding.EncodeToString([]byte(name)))
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
		msgs, _, err := r.Batch(ctx, stream, chunks, seq+1, 64)
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

// DefaultReaderInactive is how long an ordered consumer a reader created
// outlives a reader that died without deleting it (OrderedConsumerConfig
// InactiveThreshold): readers delete theirs when done (DropConsumer), so
// the consumer count of a stream stays where it was.
const DefaultReaderInactive = 10 * time.Second

// DropConsumer deletes consumer c of stream when a reader is done with it,
// with a short deadline of its own (the reader's context may have ended);
// a failure leaves the consumer to DefaultReaderInactive.
func DropConsumer(js jetstream.JetStream, stream string, c jetstream.Consumer) {
	if c == nil {
		return
	}
	info := c.CachedInfo()
	if info == nil || info.Name == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultProbeTimeout*4)
	defer cancel()
	_ = js.DeleteConsumer(ctx, stream, info.Name)
}
