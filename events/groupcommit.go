package events

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Group commit defaults.
const (
	// DefaultMaxGroup bounds one atomic batch (the server allows 1,000).
	DefaultMaxGroup = 256
	// groupInflight is how many batches may be stored at once.
	groupInflight = 4
)

// Header names of expected-last-subject-sequence CAS and atomic batches.
const (
	hdrExpectLastSubjSeq     = "Nats-Expected-Last-Subject-Sequence"
	hdrExpectLastSubjSeqSubj = "Nats-Expected-Last-Subject-Sequence-Subject"
	hdrBatchID               = "Nats-Batch-Id"
	hdrBatchSeq              = "Nats-Batch-Sequence"
	hdrBatchCommit           = "Nats-Batch-Commit"
)

type groupItem struct {
	ctx      context.Context
	runID    string
	expected uint64
	ev       *Event
	data     []byte
	done     chan groupResult
}

type groupResult struct {
	seq uint64
	err error
}

// committer gathers appends that arrive while a batch is being stored and
// stores them as the next atomic batch per run partition, each message
// keeping its own per-run compare-and-swap. It saves round trips and
// server work, not fsyncs: a single-replica file store still syncs every
// message of a batch (docs/adr/0004-group-commit.md).
type committer struct {
	s        *Store
	ch       chan *groupItem
	inflight chan struct{}

	batches, grouped, fallbacks atomic.Int64
}

// GroupStats reports group commit activity: atomic batches stored, appends
// they carried, and batches that fell back to single appends.
type GroupStats struct {
	Batches, Grouped, Fallbacks int64
}

// GroupStats returns the store's group commit counters (zero when off).
func (s *Store) GroupStats() GroupStats {
	if s.group == nil {
		return GroupStats{}
	}
	return GroupStats{s.group.batches.Load(), s.group.grouped.Load(), s.group.fallbacks.Load()}
}

// EnableGroupCommit turns on group commit for this store's appends. It is
// safe only on streams with AllowAtomicPublish (the POLOS_RUNS_<p> partitions have it).
func (s *Store) EnableGroupCommit() {
	if s.group != nil {
		return
	}
	c := &committer{s: s, ch: make(chan *groupItem, DefaultMaxGroup*4), inflight: make(chan struct{}, groupInflight)}
	s.group = c
	go c.loop()
}

func (c *committer) submit(ctx context.Context, runID string, expected uint64, ev *Event, data []byte) (uint64, error) {
	it := &groupItem{ctx: ctx, runID: runID, expected: expected, ev: ev, data: data, done: make(chan groupResult, 1)}
	select {
	case c.ch <- it:
	case <-ctx.Done():
		return 0, perr.Wrap(ctx.Err(), CodeStoreIO, "", "append to run %s cancelled", runID)
	}
	r := <-it.done
	return r.seq, r.err
}

func (c *committer) loop() {
	for first := range c.ch {
		batch := []*groupItem{first}
	drain:
		for len(batch) < DefaultMaxGroup {
			select {
			case it := <-c.ch:
				batch = append(batch, it)
			default:
				break drain
			}
		}
		c.inflight <- struct{}{}
		go func(batch []*groupItem) {
			defer func() { <-c.inflight }()
			// An atomic batch commits into one stream: split by partition.
			parts := map[int][]*groupItem{}
			for _, it := range batch {
				p := protocol.RunPartition(it.runID)
				parts[p] = append(parts[p], it)
			}
			var wg sync.WaitGroup
			for _, part := range parts {
				wg.Add(1)
				go func(part []*groupItem) {
					defer wg.Done()
					c.storePart(part)
				}(part)
			}
			wg.Wait()
		}(batch)
	}
}

// storePart stores the appends of one partition: alone on the single
// path, or as one atomic batch.
func (c *committer) storePart(part []*groupItem) {
	if len(part) > 1 {
		c.storeBatch(part)
		return
	}
	it := part[0]
	seq, err := c.s.appendSingle(it.ctx, it.runID, it.expected, it.ev, it.data)
	it.done <- groupResult{seq, err}
}

// storeBatch publishes the batch atomically. On any failure (one CAS
// failed, lost ack, server error) every item retries on the single path in
// parallel, which classifies conflicts and detects writes that did land.
func (c *committer) storeBatch(batch []*groupItem) {
	id := nuid.Next()
	n := len(batch)
	var ackSeq uint64
	err := func() error {
		for i, it := range batch {
			m := &nats.Msg{Subject: c.s.Subject(it.runID, it.ev.Type), Data: it.data, Header: nats.Header{}}
			m.Header.Set(hdrExpectLastSubjSeq, strconv.FormatUint(it.expected, 10))
			m.Header.Set(hdrExpectLastSubjSeqSubj, c.s.RunFilter(it.runID))
			m.Header.Set(hdrBatchID, id)
			m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
			if i < n-1 {
				if err := c.s.nc.PublishMsg(m); err != nil {
					return err
				}
				continue
			}
			m.Header.Set(hdrBatchCommit, "1")
			// The wait for the commit ack is one attempt of the store's
			// retry policy; past it (or on any failure) every append of the
			// batch falls back to the single path, which retries under the
			// same policy and re-reads the slot first (so a batch that did
			// land is not written twice).
			resp, err := c.s.nc.RequestMsg(m, c.s.retry.AttemptTimeout())
			if err != nil {
				return err
			}
			if c.s.dropAck != nil && c.s.dropAck() {
				return nats.ErrTimeout
			}
			var ack struct {
				Seq   uint64 `json:"seq"`
				Count int    `json:"count"`
				Error *struct {
					Code    int    `json:"err_code"`
					Message string `json:"description"`
				} `json:"error"`
			}
			if err := json.Unmarshal(resp.Data, &ack); err != nil {
				return err
			}
			if ack.Error != nil {
				return perr.New(CodeConflict, "", "batch rejected: %d %s", ack.Error.Code, ack.Error.Message)
			}
			if ack.Count != n {
				return perr.New(CodeStoreIO, "", "batch stored %d of %d messages", ack.Count, n)
			}
			ackSeq = ack.Seq
		}
		return nil
	}()
	if err == nil {
		c.batches.Add(1)
		c.grouped.Add(int64(n))
		for i, it := range batch {
			seq := ackSeq - uint64(n-1-i)
			it.ev.Seq = seq
			it.done <- groupResult{seq: seq}
		}
		return
	}
	c.fallbacks.Add(1)
	for _, it := range batch {
		go func(it *groupItem) {
			seq, err := c.s.appendSingle(it.ctx, it.runID, it.expected, it.ev, it.data)
			it.done <- groupResult{seq, err}
		}(it)
	}
}
