package events

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Store defaults.
const (
	// DefaultBlobThreshold: event payloads larger than this go to the object
	// store under their sha256, and the event carries the reference.
	DefaultBlobThreshold = 64 << 10
	// DefaultReadBatch is how many events Load reads with one batched
	// direct get before switching to an ordered consumer.
	DefaultReadBatch = 256
	// DefaultAppendRetryFor bounds how long an append whose ack was lost, or
	// that met a store fault, is tried again (protocol.StoreRetry): longer
	// than a leader election or a broker stall. SetRetry changes it.
	DefaultAppendRetryFor = protocol.DefaultStoreRetryFor
	// DefaultNamespace is used when none is given.
	DefaultNamespace = "default"
)

// Store error codes.
const (
	CodeConflict       perr.Code = "APPEND_CONFLICT"    // generic CAS conflict (see ConflictError)
	CodeLostOwnership  perr.Code = "LOST_OWNERSHIP"     // another executor appended to this run
	CodeSignalArrived  perr.Code = "SIGNAL_ARRIVED"     // a client/other run appended first; reload and retry
	CodeNonDeterminism perr.Code = "NONDETERMINISM"     // a different event sits at our position
	CodeRunExists      perr.Code = "RUN_EXISTS"         // create of an ID that already has history
	CodeRunNotFound    perr.Code = "RUN_NOT_FOUND"      // no history for the run ID
	CodeBadID          perr.Code = "BAD_ID"             // run ID or namespace not a valid subject token
	CodeStoreIO                  = protocol.CodeStoreIO // the server did not answer
	CodePayloadTooBig  perr.Code = "PAYLOAD_TOO_LARGE"  // over the object-store limit
	CodeBlobMissing    perr.Code = "BLOB_MISSING"       // an event references a blob that is gone
	CodeBadTip         perr.Code = "APPEND_BAD_TIP"     // an append names a sequence without its digest
)

// JetStream API error codes for a failed expected-last-sequence check:
// 10071 on a single server, 10164 on replicated streams.
const (
	jsErrWrongLastSeq    = 10071
	jsErrWrongLastSeqAlt = 10164
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// IsCASConflict reports whether err is a failed compare-and-swap: a stream
// append whose expected last sequence was wrong (10071; 10164 on
// replicated streams), or a KV Create/Update that lost its race.
func IsCASConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jsErrWrongLastSeq || apiErr.ErrorCode == jsErrWrongLastSeqAlt)
}

// ValidateID checks that s can be used as a run ID or namespace: it becomes a
// NATS subject token.
func ValidateID(kind, s string) error {
	if !idPattern.MatchString(s) {
		return perr.New(CodeBadID, "use 1-128 characters from A-Z a-z 0-9 _ -",
			"%s %q is not valid", kind, s)
	}
	return nil
}

// ConflictError describes an append that lost its compare-and-swap.
type ConflictError struct {
	Code     perr.Code
	Expected uint64 // the sequence we expected to be last
	Found    *Event // the event that sits right after Expected (nil if unknown)
}

func (c *ConflictError) Error() string {
	found := "nothing"
	if d, ok := DamageOf(derefEvent(c.Found)); ok {
		found = "an unreadable " + d.String()
	} else if c.Found != nil {
		found = fmt.Sprintf("%s (pos %d, name %q, writer %s) at seq %d", c.Found.Type, c.Found.Pos, c.Found.Name, c.Found.Writer, c.Found.Seq)
	}
	fix := ""
	switch c.Code {
	case CodeRunDamaged:
		fix = "none here: the run is parked as damaged (see `polos status`)"
	case CodeLostOwnership:
		fix = "none needed: another executor owns the run now; this one stops"
	case CodeSignalArrived:
		fix = "none needed: reload the history and append again"
	}
	return perr.New(c.Code, fix, "append expected last sequence %d, found %s", c.Expected, found).Error()
}

func derefEvent(e *Event) Event {
	if e == nil {
		return Event{}
	}
	return *e
}

// Is lets perr.CodeOf-style checks work through errors.As on *perr.Error.
func (c *ConflictError) As(target any) bool {
	if p, ok := target.(**perr.Error); ok {
		*p = &perr.Error{Code: c.Code, Msg: c.Error()}
		return true
	}
	return false
}

// Store reads and appends run histories in one namespace.
type Store struct {
	nc            *nats.Conn
	js            jetstream.JetStream
	ns            string
	writer        string
	blobs         jetstream.ObjectStore
	BlobThreshold int
	// beforeAck, when set, is called after a successful store and may drop
	// the ack (tests inject lost acks with it).
	dropAck func() bool
	group   *committer
	// directOnly reads with direct gets only (no consumers): what the
	// operator and observer roles are allowed.
	directOnly bool
	reader     *protocol.DirectReader
	// retry is how appends are retried; retries counts attempts that
	// failed with a store fault or a lost ack (shared by WithWriter copies).
	retry   protocol.StoreRetry
	retries *atomic.Int64
}

// SetRetry sets how the store's appends are retried (default: every store
// fault waited out for DefaultAppendRetryFor). Set it before the store is
// shared.
func (s *Store) SetRetry(p protocol.StoreRetry) { s.retry = p }

// Retry is the store's retry policy (for other writes made on its behalf,
// such as protocol.EnqueueWith).
func (s *Store) Retry() protocol.StoreRetry { return s.retry }

// AppendRetries counts append attempts that failed (a lost ack, a store
// fault, a slot that could not be re-read) and were resolved by re-reading
// the slot or tried again.
func (s *Store) AppendRetries() int64 { return s.retries.Load() }

// Reader is the store's direct-get reader (shared with followers).
func (s *Store) Reader() *protocol.DirectReader { return s.reader }

// DirectReadsOnly makes the store read histories and blobs with direct
// gets only, never creating a consumer: for identities that may only read
// (protocol.RoleOperator, protocol.RoleObserver). Long histories then take
// one round trip per DefaultReadBatch events.
func (s *Store) DirectReadsOnly() { s.directOnly = true }

// NewStore returns a store for namespace ns. writer identifies this
// process/executor in the events it writes.
func NewStore(nc *nats.Conn, js jetstream.JetStream, ns, writer string) (*Store, error) {
	if ns == "" {
		ns = DefaultNamespace
	}
	if err := ValidateID("namespace", ns); err != nil {
		return nil, err
	}
	return &Store{nc: nc, js: js, ns: ns, writer: writer, BlobThreshold: DefaultBlobThreshold, reader: protocol.NewDirectReader(nc), retries: new(atomic.Int64)}, nil
}

// Namespace is the store's namespace.
func (s *Store) Namespace() string { return s.ns }

// Writer is the identity written into events.
func (s *Store) Writer() string { return s.writer }

// JS exposes the JetStream context.
func (s *Store) JS() jetstream.JetStream { return s.js }

// Conn exposes the NATS connection.
func (s *Store) Conn() *nats.Conn { return s.nc }

// WithWriter returns a copy of the store writing as w.
func (s *Store) WithWriter(w string) *Store {
	c := *s
	c.writer = w
	return &c
}

// DropAcks makes the store behave as if the ack of an append got lost after
// the server stored it, whenever fn returns true (fault injection).
func (s *Store) DropAcks(fn func() bool) { s.dropAck = fn }

// RunFilter is the wildcard covering every event subject of a run.
func (s *Store) RunFilter(runID string) string { return s.runPrefix(runID) + ">" }

// Subject is the subject of one event.
func (s *Store) Subject(runID string, t Type) string { return s.runPrefix(runID) + string(t) }

// runPrefix is "polos.<ns>.run.<partition>.<runID>.".
func (s *Store) runPrefix(runID string) string {
	return protocol.RunPrefix(s.ns, runID)
}

// AllRunsFilter covers every event of every run of the namespace in
// partition p (one stream each).
func (s *Store) AllRunsFilter(p int) string {
	return protocol.PartitionFilter(s.ns, p)
}

// StreamOf is the stream that holds run runID's history.
func (s *Store) StreamOf(runID string) string { return protocol.RunsStreamOf(runID) }

// Append appends ev to the run's history if the run's last message is
// still after (the zero Tip = the run has no history yet: this creates
// it). It returns the new sequence. ev is linked to after (ev.PrevSeq,
// ev.Prev: the chain, chain.go): every writer appends through here, and a
// tip that names a sequence without its digest is refused (CodeBadTip), so
// no writer can leave its events unchained. Take the tip from the history
// read (TipOf) or from the previous append (TipOfEvent).
//
// Under failure: if the ack is lost (timeout) or the store has a fault, it
// re-reads the slot; if our bytes are there the append succeeded (no
// duplicate is written), else it tries again with backoff and jitter for
// up to DefaultAppendRetryFor (SetRetry) or ctx's deadline, whichever
// comes first, and then returns the fault coded by
// protocol.ClassifyStoreError (STORE_FULL, STORE_READ_ONLY,
// STORE_NO_QUORUM, STORE_UNAVAILABLE). A
// conflict returns *ConflictError whose Code says what happened:
// CodeRunExists (creating an existing run), CodeSignalArrived,
// CodeLostOwnership, CodeNonDeterminism, or CodeRunDamaged when the message
// after expectedSeq is unreadable (an append lands after bytes that cannot
// be read only when the caller names their sequence: docs/adr/0007).
// Payloads over BlobThreshold are stored in the object store first.
func (s *Store) Append(ctx context.Context, runID string, after Tip, ev *Event) (uint64, error) {
	if err := ValidateID("run ID", runID); err != nil {
		return 0, err
	}
	if (after.Seq == 0) != (after.Digest == "") {
		return 0, perr.New(CodeBadTip, "pass events.TipOf(history) or events.TipOfEvent(last appended event)",
			"append to run %s after seq %d with digest %q: a tip names both or neither", runID, after.Seq, after.Digest)
	}
	expectedSeq := after.Seq
	ev.RunID = runID
	ev.PrevSeq, ev.Prev = after.Seq, after.Digest
	if ev.Time == 0 {
		ev.Time = time.Now().UnixNano()
	}
	if ev.Writer == "" {
		ev.Writer = s.writer
	}
	if err := s.offload(ctx, ev); err != nil {
		return 0, err
	}
	data, err := Encode(ev)
	if err != nil {
		return 0, err
	}
	if s.group != nil {
		return s.group.submit(ctx, runID, expectedSeq, ev, data)
	}
	return s.appendSingle(ctx, runID, expectedSeq, ev, data)
}

// appendSingle publishes one encoded event with compare-and-swap, resolving
// lost acks and classifying conflicts (see Append). A failed attempt is
// retried under the store's retry policy (protocol.StoreRetry: backoff
// with jitter up to DefaultAppendRetryFor, or the ctx deadline), and
// before each retry the slot is re-read: our own bytes there (same digest)
// mean the write landed, so a stall or a leader election never writes an
// event twice.
func (s *Store) appendSingle(ctx context.Context, runID string, expectedSeq uint64, ev *Event, data []byte) (uint64, error) {
	msg := &nats.Msg{Subject: s.Subject(runID, ev.Type), Data: data, Header: nats.Header{}}
	var seq uint64
	err := s.retry.Do(ctx, "append to run "+runID, func(actx context.Context) error {
		ack, err := s.js.PublishMsg(actx, msg, jetstream.WithExpectLastSequenceForSubject(expectedSeq, s.RunFilter(runID)))
		if err == nil && s.dropAck != nil && s.dropAck() {
			err = nats.ErrTimeout // stored, but we act as if the ack never came
		}
		if err == nil {
			seq = ack.Sequence
			return nil
		}
		if IsCASConflict(err) {
			rctx, cancel := s.retry.AttemptContext(ctx)
			seq, err = s.resolveConflict(rctx, runID, expectedSeq, ev)
			cancel()
			var c *ConflictError
			if err != nil && !errors.As(err, &c) {
				s.retries.Add(1)
				return err // the slot could not be re-read: publish again
			}
			return protocol.Final(err)
		}
		// Lost ack or store fault: the write may or may not have landed.
		s.retries.Add(1)
		rctx, cancel := s.retry.AttemptContext(ctx)
		found, rerr := s.eventAfter(rctx, runID, expectedSeq)
		cancel()
		if rerr == nil && found != nil {
			if found.Digest == ev.Digest {
				seq = found.Seq
				return nil
			}
			seq, err = s.classify(runID, expectedSeq, ev, found)
			return protocol.Final(err)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	ev.Seq = seq
	return seq, nil
}

func (s *Store) resolveConflict(ctx context.Context, runID string, expectedSeq uint64, ev *Event) (uint64, error) {
	found, err := s.eventAfter(ctx, runID, expectedSeq)
	if err != nil {
		return 0, err
	}
	if found == nil {
		// The run's last sequence is below expectedSeq: the caller's view is
		// ahead of the stream (history truncated?).
		return 0, &ConflictError{Code: CodeConflict, Expected: expectedSeq}
	}
	if found.Digest == ev.Digest {
		// Our own write whose ack was lost earlier.
		ev.Seq = found.Seq
		return found.Seq, nil
	}
	return s.classify(runID, expectedSeq, ev, found)
}

func (s *Store) classify(runID string, expectedSeq uint64, ev, found *Event) (uint64, error) {
	code := CodeLostOwnership
	switch {
	case found.Type == Unreadable:
		code = CodeRunDamaged
	case expectedSeq == 0 && ev.Type == RunStarted:
		code = CodeRunExists
	case found.Type.IsSignal():
		code = CodeSignalArrived
	case found.Writer == ev.Writer && found.Pos == ev.Pos && (found.Name != ev.Name || found.Type != ev.Type):
		code = CodeNonDeterminism
	}
	return 0, &ConflictError{Code: code, Expected: expectedSeq, Found: found}
}

// eventAfter returns the event of the first message of the run with a
// sequence above seq (the message's own event, after its priors), or nil
// when there is none.
func (s *Store) eventAfter(ctx context.Context, runID string, seq uint64) (*Event, error) {
	evs, _, err := s.readBatch(ctx, runID, seq+1, 1)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return &evs[len(evs)-1], nil
}

// First returns the run's first event (run_started), nil when the run has
// no history: one direct get, whatever the history's length.
func (s *Store) First(ctx context.Context, runID string) (*Event, error) {
	if err := ValidateID("run ID", runID); err != nil {
		return nil, err
	}
	evs, _, err := s.readBatch(ctx, runID, 1, 1)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return &evs[0], nil
}

// Load returns the run's events with a sequence above afterSeq, in order,
// and loads referenced blobs.
//
// It reads the first DefaultReadBatch events with one batched direct get
// (one round trip, no consumer to create: best for the usual short
// history or a cached run's few new events) and the rest, if any, through
// an ordered consumer, which measured about 3x faster per event on long
// histories (docs/adr/0002-reading-histories.md).
func (s *Store) Load(ctx context.Context, runID string, afterSeq uint64) ([]Event, error) {
	if err := ValidateID("run ID", runID); err != nil {
		return nil, err
	}
	out, pending, err := s.readBatch(ctx, runID, afterSeq+1, DefaultReadBatch)
	if err != nil {
		return nil, err
	}
	for pending > 0 && len(out) > 0 {
		if !s.directOnly {
			rest, err := s.LoadOrdered(ctx, runID, out[len(out)-1].Seq)
			if err != nil {
				return nil, err
			}
			out = append(out, rest...)
			break
		}
		var more []Event
		if more, pending, err = s.readBatch(ctx, runID, out[len(out)-1].Seq+1, DefaultReadBatch); err != nil {
			return nil, err
		}
		if len(more) == 0 {
			break
		}
		out = append(out, more...)
	}
	for i := range out {
		if err := s.inflate(ctx, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readBatch does one batched direct get: up to n events of the run starting
// at sequence from. pending is how many matching messages remain after it.
// A message that cannot be read becomes an Unreadable stand-in
// (ReadMessage), never an error.
func (s *Store) readBatch(ctx context.Context, runID string, from uint64, n int) ([]Event, uint64, error) {
	var out []Event
	pending, err := s.readRaw(ctx, runID, from, n, func(m StoredMsg) {
		out = append(out, ReadMessage(s.ns, runID, m)...)
	})
	if err != nil {
		return nil, 0, err
	}
	return out, pending, nil
}

// readRaw does one batched direct get of up to n messages of the run from
// sequence from and calls fn with each as stored. pending is how many
// matching messages remain after them.
func (s *Store) readRaw(ctx context.Context, runID string, from uint64, n int, fn func(StoredMsg)) (uint64, error) {
	msgs, pending, err := s.reader.Batch(ctx, s.StreamOf(runID), s.RunFilter(runID), from, n)
	if err != nil {
		return 0, perr.Wrap(err, CodeStoreIO, "check that the NATS server is up (polosd running?)", "cannot read run %s", runID)
	}
	for _, m := range msgs {
		fn(m)
	}
	return pending, nil
}

// RawHistory returns every stored message of the run as it is, decodable
// or not (`polos history <run> --raw`).
func (s *Store) RawHistory(ctx context.Context, runID string) ([]StoredMsg, error) {
	if err := ValidateID("run ID", runID); err != nil {
		return nil, err
	}
	var out []StoredMsg
	from := uint64(1)
	for {
		pending, err := s.readRaw(ctx, runID, from, DefaultReadBatch, func(m StoredMsg) { out = append(out, m) })
		if err != nil {
			return nil, err
		}
		if pending == 0 || len(out) == 0 {
			return out, nil
		}
		from = out[len(out)-1].Seq + 1
	}
}

// LoadOrdered reads the run's events after afterSeq through an ordered
// consumer (no blob loading). Load uses it for long histories. Unreadable
// messages become stand-ins, as in Load.
func (s *Store) LoadOrdered(ctx context.Context, runID string, afterSeq uint64) ([]Event, error) {
	stream := s.StreamOf(runID)
	c, err := s.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{s.RunFilter(runID)},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       afterSeq + 1,
		InactiveThreshold: protocol.DefaultReaderInactive,
	})
	if err != nil {
		return nil, perr.Wrap(err, CodeStoreIO, "", "cannot read run %s", runID)
	}
	defer protocol.DropConsumer(s.js, stream, c)
	info, err := c.Info(ctx)
	if err != nil {
		return nil, perr.Wrap(err, CodeStoreIO, "", "cannot read run %s", runID)
	}
	total := int(info.NumPending)
	out := make([]Event, 0, total)
	read := func(m jetstream.Msg) {
		md, _ := m.Metadata()
		sm := StoredMsg{Stream: stream, Subject: m.Subject(), Data: m.Data()}
		if md != nil {
			sm.Seq, sm.Time = md.Sequence.Stream, md.Timestamp
		}
		out = append(out, ReadMessage(s.ns, runID, sm)...)
	}
	for msgs := 0; msgs < total; {
		batch, err := c.FetchNoWait(total - msgs)
		if err != nil {
			return nil, perr.Wrap(err, CodeStoreIO, "", "cannot read run %s", runID)
		}
		got := 0
		for m := range batch.Messages() {
			read(m)
			got++
		}
		if got == 0 {
			b2, err := c.Fetch(total-msgs, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				return nil, err
			}
			for m := range b2.Messages() {
				read(m)
				got++
			}
		}
		msgs += got
	}
	return out, nil
}

// TipOf returns the tip of the run's history (the zero Tip if it has
// none), read from the store: what an append after everything so far
// follows.
func (s *Store) TipOf(ctx context.Context, runID string) (Tip, error) {
	evs, err := s.Load(ctx, runID, 0)
	return TipOf(evs), err
}

// LastSeq returns the sequence of the run's last event, 0 if none.
func (s *Store) LastSeq(ctx context.Context, runID string) (uint64, error) {
	evs, err := s.Load(ctx, runID, 0)
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	return evs[len(evs)-1].Seq, nil
}

// AppendSignal appends an event from outside the run's executor (a
// decision, a cancel request, a child's result). It reads the history,
// calls check (which may refuse with an error, e.g. "step not waiting"),
// and appends with compare-and-swap, repeating on conflict, so two racing
// signals are ordered and check sees the winner's event.
func (s *Store) AppendSignal(ctx context.Context, runID string, ev *Event, check func(history []Event) error) (uint64, []Event, error) {
	for attempt := 0; ; attempt++ {
		hist, err := s.Load(ctx, runID, 0)
		if err != nil {
			return 0, nil, err
		}
		if len(hist) == 0 {
			return 0, nil, perr.New(CodeRunNotFound, "check the run ID with `polos list`", "run %s does not exist", runID)
		}
		if check != nil {
			if err := check(hist); err != nil {
				return 0, hist, err
			}
		}
		e := *ev
		seq, err := s.Append(ctx, runID, TipOf(hist), &e)
		if err == nil {
			return seq, append(hist, e), nil
		}
		var c *ConflictError
		if !errors.As(err, &c) || attempt > 50 {
			return 0, hist, err
		}
	}
}

func (s *Store) blobStore(ctx context.Context) (jetstream.ObjectStore, error) {
	if s.blobs != nil {
		return s.blobs, nil
	}
	obs, err := s.js.ObjectStore(ctx, protocol.BlobStore)
	if err != nil {
		return nil, protocol.Unavailable(err, CodeStoreIO, "object store %s unavailable", protocol.BlobStore)
	}
	s.blobs = obs
	return obs, nil
}

// offload moves a large Data payload into the object store.
func (s *Store) offload(ctx context.Context, ev *Event) error {
	for i := range ev.Prior {
		if err := s.offload(ctx, &ev.Prior[i]); err != nil {
			return err
		}
	}
	if len(ev.Data) <= s.BlobThreshold || ev.Blob != "" {
		return nil
	}
	obs, err := s.blobStore(ctx)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(ev.Data)
	name := hex.EncodeToString(sum[:])
	if _, err := obs.GetInfo(ctx, name); err != nil {
		if _, err := obs.PutBytes(ctx, name, ev.Data); err != nil {
			return perr.Wrap(err, CodePayloadTooBig, "keep step results and inputs under the server's store limits",
				"cannot store a %d-byte payload in the object store", len(ev.Data))
		}
	}
	ev.Blob = name
	ev.Data = nil
	return nil
}

// inflate loads a referenced blob into Data and checks its sha256.
func (s *Store) inflate(ctx context.Context, ev *Event) error {
	if ev.Blob == "" || ev.Data != nil {
		return nil
	}
	b, found, err := s.reader.ReadObject(ctx, protocol.BlobStore, ev.Blob)
	if err == nil && !found {
		err = errors.New("no such object")
	}
	if err != nil {
		return perr.Wrap(err, CodeBlobMissing, "restore the object store "+protocol.BlobStore+" from backup",
			"event seq %d of run %s references blob %s", ev.Seq, ev.RunID, ev.Blob)
	}
	sum := sha256.Sum256(b)
	if !bytes.Equal([]byte(hex.EncodeToString(sum[:])), []byte(ev.Blob)) {
		return perr.New(CodeBlobMissing, "restore the object store from backup", "blob %s content does not match its name", ev.Blob)
	}
	ev.Data = b
	return nil
}
