package executor

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/ratelimit"
)

// Queue concurrency limits (see ratelimit.Slots and ADR 0160).
//
// A run whose run_started carries concurrency_limit > 0 must hold a slot of
// its queue (and concurrency_key) while an executor advances it. The slot is
// taken after the run lease and released when the advance ends: when the run
// completes, fails, is cancelled or waits (a person, a timer, an event, a
// child), so waiting holds no slot. A run that cannot get one is not
// advanced: its task is Nak'ed with a delay that grows with its place in
// line, so it holds no executor slot while it waits.
//
// Both ends are recorded as annotations (slot_acquired, slot_released),
// appended by the lease holder outside the workflow code, so replay never
// sees them.

// Attributes of run_started that configure the limit.
const (
	AttrConcurrencyLimit = "concurrency_limit"
	AttrConcurrencyKey   = "concurrency_key"
)

// Annotation names.
const (
	AnnotationSlotAcquired = "slot_acquired"
	AnnotationSlotReleased = "slot_released"
)

// CodeWaitingForSlot: the run's queue is at its concurrency limit; the task
// is retried later.
const CodeWaitingForSlot perr.Code = "WAITING_FOR_SLOT"

// Slot retry delays: the first in line retries after DefaultSlotRetryDelay,
// each run further back DefaultSlotRetryStep later, capped.
const (
	DefaultSlotRetryDelay = 100 * time.Millisecond
	DefaultSlotRetryStep  = 20 * time.Millisecond
	MaxSlotRetryDelay     = 2 * time.Second
)

type slotWait struct{ ahead int }

func (w *slotWait) Error() string { return strconv.Itoa(w.ahead) + " runs ahead" }

func waitingForSlot(err error) (int, bool) {
	var w *slotWait
	if perr.CodeOf(err) == CodeWaitingForSlot && errors.As(err, &w) {
		return w.ahead, true
	}
	return 0, false
}

func slotRetryDelay(ahead int) time.Duration {
	return min(DefaultSlotRetryDelay+time.Duration(ahead)*DefaultSlotRetryStep, MaxSlotRetryDelay)
}

// slotRequest says whether advancing the run needs a slot. A finished run,
// or one with a cancel request (advancing only records the cancellation),
// does not.
func (e *Executor) slotRequest(hist []events.Event) (ratelimit.Request, bool) {
	first := hist[0]
	limit, _ := strconv.Atoi(first.Attr(AttrConcurrencyLimit))
	if limit <= 0 {
		return ratelimit.Request{}, false
	}
	for _, ev := range hist {
		if ev.Type.IsTerminal() || ev.Type == events.CancelRequest {
			return ratelimit.Request{}, false
		}
	}
	return ratelimit.Request{
		Queue: protocol.QueueOrDefault(first.Attr("queue")), Key: first.Attr(AttrConcurrencyKey), Limit: limit,
		Run: first.RunID, Holder: e.opts.ID, Ticket: hist[len(hist)-1].Seq,
	}, true
}

// slotHold is a slot taken for one advance.
type slotHold struct {
	slot     *ratelimit.Slot
	req      ratelimit.Request
	released bool
}

// takeSlot acquires the run's slot if it needs one and records
// slot_acquired. It returns the history including the annotation.
func (e *Executor) takeSlot(ctx context.Context, runID string, hist []events.Event) (*slotHold, []events.Event, error) {
	req, ok := e.slotRequest(hist)
	if !ok {
		return nil, hist, nil
	}
	slot, ahead, err := e.slots.Acquire(ctx, req)
	if err != nil {
		return nil, hist, err
	}
	if slot == nil {
		return nil, hist, perr.Wrap(&slotWait{ahead: ahead}, CodeWaitingForSlot, "none needed: the run starts when a slot frees",
			"queue %s is at its concurrency limit %d", req.Queue, req.Limit)
	}
	h := &slotHold{slot: slot, req: req}
	hist, err = e.annotate(ctx, runID, hist, AnnotationSlotAcquired, h.attrs())
	if err != nil {
		e.releaseSlot(ctx, runID, h, hist, true)
		return nil, hist, err
	}
	return h, hist, nil
}

func (h *slotHold) attrs() map[string]string {
	a := map[string]string{"queue": h.req.Queue, "limit": strconv.Itoa(h.req.Limit)}
	if h.req.Key != "" {
		a["key"] = h.req.Key
	}
	return a
}

// releaseSlot records slot_released (unless the run was lost to another
// writer) and frees the slot; the annotation is written first, so the
// interval the history shows lies inside the time the slot was held.
// Idempotent.
func (e *Executor) releaseSlot(ctx context.Context, runID string, h *slotHold, hist []events.Event, skipAnnotation bool) []events.Event {
	if h.released {
		return hist
	}
	h.released = true
	if !skipAnnotation {
		var err error
		if hist, err = e.annotate(ctx, runID, hist, AnnotationSlotReleased, h.attrs()); err != nil {
			e.log.Warn("recording slot release failed", "run", runID, "err", err)
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := h.slot.Release(rctx); err != nil {
		e.log.Warn("releasing a slot failed; it expires on its own", "run", runID, "err", err, "ttl", ratelimit.DefaultSlotTTL)
	}
	return hist
}

// annotate appends an annotation after the last event of hist with
// compare-and-swap; signals that landed first are loaded and kept. It
// returns hist with the new events.
func (e *Executor) annotate(ctx context.Context, runID string, hist []events.Event, name string, attrs map[string]string) ([]events.Event, error) {
	ev := &events.Event{Type: events.Annotation, Name: name, Attrs: attrs}
	for attempt := 0; attempt < 50; attempt++ {
		_, err := e.store.Append(ctx, runID, events.TipOf(hist), ev)
		if err == nil {
			return append(hist, *ev), nil
		}
		if perr.CodeOf(err) != events.CodeSignalArrived {
			return hist, err
		}
		fresh, lerr := e.store.Load(ctx, runID, hist[len(hist)-1].Seq)
		if lerr != nil {
			return hist, lerr
		}
		hist = append(hist, fresh...)
	}
	return hist, perr.New(events.CodeStoreIO, "", "annotation %s of run %s kept conflicting with signals", name, runID)
}
