package client

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Follow delivers the run's events with a sequence above fromSeq, in order,
// with no gap and no duplicate, and keeps following new ones until ctx is
// done or fn returns an error (ErrStop stops without one). runID "" follows
// every run of the namespace from the start (see FollowAll for a resumable
// position over all runs).
func (c *Client) Follow(ctx context.Context, runID string, fromSeq uint64, fn func(events.Event) error) error {
	if runID == "" {
		return c.FollowAll(ctx, FollowOptions{}, func(e events.Event, _ Cursor) error { return fn(e) })
	}
	it, err := c.partitionFollower(ctx, c.store.StreamOf(runID), c.store.RunFilter(runID), fromSeq, false)
	if err != nil {
		return err
	}
	defer it.Stop()
	for {
		m, err := it.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		evs, ok := c.decodeMsg(m)
		if !ok {
			continue
		}
		if err := deliver(evs, fn); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
}

// deliver calls fn with the events of one stored message. A message's
// events share a sequence, so they are delivered together: ErrStop takes
// effect after the last of them (a resume after that sequence must not
// skip the rest).
func deliver(evs []events.Event, fn func(events.Event) error) error {
	var stop error
	for _, e := range evs {
		if err := fn(e); err != nil {
			if !errors.Is(err, ErrStop) {
				return err
			}
			stop = err
		}
	}
	return stop
}

// Cursor is a resume position over every run of a namespace: for each run
// partition (protocol.RunPartitions streams), the last stream sequence
// delivered. Its text form is the sequences joined by dots, partition 0
// first ("12.40.7.9"); the zero cursor ("0.0.0.0") is the beginning.
type Cursor [protocol.RunPartitions]uint64

// String renders the cursor as ParseCursor reads it.
func (c Cursor) String() string {
	parts := make([]string, len(c))
	for i, v := range c {
		parts[i] = strconv.FormatUint(v, 10)
	}
	return strings.Join(parts, ".")
}

// ParseCursor reads a cursor printed by Cursor.String (by `polos tail --all`
// in its output).
func ParseCursor(s string) (Cursor, error) {
	var c Cursor
	parts := strings.Split(s, ".")
	if len(parts) != len(c) {
		return c, perr.New(CodeBadInput, "pass the cursor printed with the last event you saw, e.g. 12.40.7.9",
			"cursor %q has %d parts, want %d (one sequence per run partition)", s, len(parts), len(c))
	}
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return c, perr.New(CodeBadInput, "pass the cursor printed with the last event you saw, e.g. 12.40.7.9",
				"cursor part %d is %q, not a sequence number", i, p)
		}
		c[i] = v
	}
	return c, nil
}

// FollowOptions select what FollowAll delivers.
type FollowOptions struct {
	From    Cursor        // deliver events after this position
	Types   []events.Type // only these event types (all when empty)
	NewOnly bool          // ignore From and everything stored before the call
	// Opened, when set, is called once every partition is being followed
	// (with NewOnly: from then on no new event is missed).
	Opened func()
}

func (o FollowOptions) wants(t events.Type) bool {
	return len(o.Types) == 0 || slices.Contains(o.Types, t)
}

// FollowAll delivers the events of every run of the namespace after
// o.From, calling fn with each event and the cursor just past it, until ctx
// is done or fn returns an error (ErrStop stops without one). Events of one
// run arrive in order with no gap and no duplicate; events of runs in
// different partitions are interleaved in arrival order. Resuming from the
// last cursor fn saw delivers every later event exactly once. fn is never
// called concurrently.
func (c *Client) FollowAll(ctx context.Context, o FollowOptions, fn func(events.Event, Cursor) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type item struct {
		part int
		evs  []events.Event
		err  error
	}
	ch := make(chan item)
	for p := 0; p < protocol.RunPartitions; p++ {
		// One type: a filter on it; several: the whole partition, filtered
		// here (one follower per partition keeps the cursor's order).
		filter := c.store.AllRunsFilter(p)
		if len(o.Types) == 1 {
			filter = strings.TrimSuffix(filter, ">") + "*." + string(o.Types[0])
		}
		it, err := c.partitionFollower(ctx, protocol.RunsStreamName(p), filter, o.From[p], o.NewOnly)
		if err != nil {
			return err
		}
		defer it.Stop()
		go func(p int) {
			for {
				m, err := it.Next(ctx)
				if err != nil {
					select {
					case ch <- item{part: p, err: err}:
					case <-ctx.Done():
					}
					return
				}
				evs, ok := c.decodeMsg(m)
				if !ok {
					continue
				}
				select {
				case ch <- item{part: p, evs: evs}:
				case <-ctx.Done():
					return
				}
			}
		}(p)
	}
	if o.Opened != nil {
		o.Opened()
	}
	cur := o.From
	for {
		select {
		case <-ctx.Done():
			return nil
		case it := <-ch:
			if it.err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return perr.Wrap(it.err, CodeUnreachable, "", "following run events of partition %d failed", it.part)
			}
			cur[it.part] = it.evs[0].Seq
			c := cur
			if err := deliver(it.evs, func(e events.Event) error {
				if !o.wants(e.Type) { // a prior of a message the filter selected
					return nil
				}
				e.Cursor = c.String()
				return fn(e, c)
			}); err != nil {
				if errors.Is(err, ErrStop) {
					return nil
				}
				return err
			}
		}
	}
}

// LastCursor is the position of the newest event of every partition (what
// FollowAll must reach to have delivered everything stored so far).
func (c *Client) LastCursor(ctx context.Context) (Cursor, error) {
	var cur Cursor
	for p := 0; p < protocol.RunPartitions; p++ {
		st, err := c.js.Stream(ctx, protocol.RunsStreamName(p))
		if err != nil {
			return cur, protocol.Unavailable(err, CodeUnreachable, "run stream %s unavailable", protocol.RunsStreamName(p))
		}
		info, err := st.Info(ctx)
		if err != nil {
			return cur, perr.Wrap(err, CodeUnreachable, "", "run stream %s unavailable", protocol.RunsStreamName(p))
		}
		cur[p] = info.State.LastSeq
	}
	return cur, nil
}

// partitionFollower follows one run stream from fromSeq (or from its end
// with newOnly) with direct gets: no consumer, so any reader may.
func (c *Client) partitionFollower(ctx context.Context, stream, filter string, fromSeq uint64, newOnly bool) (*protocol.Follower, error) {
	if newOnly {
		st, err := c.js.Stream(ctx, stream)
		if err != nil {
			return nil, protocol.Unavailable(err, CodeUnreachable, "cannot follow run events in %s", stream)
		}
		fromSeq = st.CachedInfo().State.LastSeq
	}
	f, err := protocol.NewFollower(c.store.Reader(), stream, filter, fromSeq)
	if err != nil {
		return nil, perr.Wrap(err, CodeUnreachable, "", "cannot follow run events in %s", stream)
	}
	return f, nil
}

// decodeMsg decodes a stored message into its run events (events.Expand);
// a message that cannot be read becomes an events.Unreadable stand-in
// (events.ReadMessage), so followers see the damage at its sequence.
func (c *Client) decodeMsg(m protocol.Stored) ([]events.Event, bool) {
	return events.ReadMessage(c.ns, events.RunIDOfSubject(c.ns, m.Subject), m), true
}
