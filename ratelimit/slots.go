package ratelimit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Slot defaults.
const (
	// DefaultSlotTTL is how long a slot stays taken after its holder stops
	// renewing it (the holder renews every DefaultSlotTTL/3). A killed
	// executor's slots are free again within about this long.
	DefaultSlotTTL = 3 * time.Second
	// DefaultWaitTTL drops a waiting run from the line when nobody asked for
	// it for this long (its task was cancelled or its run ended elsewhere),
	// so a vanished waiter never blocks the runs behind it for longer.
	DefaultWaitTTL = 10 * time.Second
	// DefaultMaxWaiting bounds the line kept per queue and key (the state is
	// one KV value). Runs beyond it still get slots, but only once the line
	// has room: order is kept for the first DefaultMaxWaiting waiters.
	DefaultMaxWaiting = 1000
	// MaxConcurrencyKey is the longest concurrency key accepted.
	MaxConcurrencyKey = 256
)

// Request asks for one slot of a queue (and concurrency key).
type Request struct {
	Queue string // the queue (a valid ID)
	Key   string // concurrency key ("" = the whole queue); any string up to MaxConcurrencyKey bytes
	Limit int    // how many runs of this queue and key may hold a slot at once (> 0)
	// Run is the run taking the slot. A run holds at most one slot per
	// queue and key: asking again while it holds one renews it, even from
	// another executor (which took the run over from a dead one).
	Run string
	// Holder identifies who renews the slot (the executor ID).
	Holder string
	// Ticket orders the line: among waiting runs, lower tickets get slots
	// first. Callers pass the run-history stream sequence of the event that
	// made the run runnable, so runs are served in the order they became
	// ready. A run keeps its first ticket while it waits.
	Ticket uint64
}

// Slots is a distributed counting semaphore per (namespace, queue, key) in
// the polos_slots KV bucket. Each queue/key is one KV value holding the
// current holders (leases with an expiry) and the line of waiting runs;
// every change is a compare-and-swap on it.
//
// Under failure: a holder that dies stops renewing and its slot expires
// after TTL; expired holders are pruned by the next Acquire. Expiry compares
// wall clocks of different machines (keep them NTP-synchronised). A holder
// that stalls past its TTL (a long GC pause, a partition) loses the slot and
// sees Lost() on its next renewal; the limit can then be exceeded by one
// run until the stalled holder notices, which is the inherent limit of
// lease-based semaphores.
type Slots struct {
	js jetstream.JetStream
	ns string
	// TTL, WaitTTL and MaxWaiting default to the package constants.
	TTL        time.Duration
	WaitTTL    time.Duration
	MaxWaiting int
	now        func() time.Time

	kv lazyKV
}

// NewSlots returns the semaphore of namespace ns. It opens the KV bucket on
// first use, so executors that never see a limited queue never touch it.
func NewSlots(js jetstream.JetStream, ns string) *Slots {
	return &Slots{js: js, ns: ns, TTL: DefaultSlotTTL, WaitTTL: DefaultWaitTTL, MaxWaiting: DefaultMaxWaiting, now: time.Now, kv: lazyKV{js: js, name: protocol.SlotsKV}}
}

// SlotState is what one queue/key's KV value holds.
type SlotState struct {
	Holders map[string]Holding `json:"holders,omitempty"` // run ID -> lease
	Waiting []Waiter           `json:"waiting,omitempty"` // sorted by ticket
}

// Holding is one taken slot.
type Holding struct {
	Holder  string    `json:"holder"`
	Since   time.Time `json:"since"`
	Expires time.Time `json:"expires"`
}

// Waiter is a run in line for a slot.
type Waiter struct {
	Run    string    `json:"run"`
	Ticket uint64    `json:"ticket"`
	Seen   time.Time `json:"seen"` // last time the run asked
}

// Live counts holders whose lease has not expired at now.
func (st SlotState) Live(now time.Time) int {
	n := 0
	for _, h := range st.Holders {
		if now.Before(h.Expires) {
			n++
		}
	}
	return n
}

// SlotKey is the KV key of a queue and concurrency key in namespace ns. The
// concurrency key is encoded (base64url), so any string is safe.
func SlotKey(ns, queue, key string) string {
	enc := "_"
	if key != "" {
		enc = "k" + base64.RawURLEncoding.EncodeToString([]byte(key))
	}
	return ns + "." + queue + "." + enc
}

func (r Request) validate() error {
	if err := events.ValidateID("queue", r.Queue); err != nil {
		return err
	}
	if err := events.ValidateID("run ID", r.Run); err != nil {
		return err
	}
	if r.Limit < 1 {
		return perr.New(CodeBadLimit, "set concurrency_limit to 1 or more (0 means unlimited: no slot is needed)", "queue %s has concurrency limit %d", r.Queue, r.Limit)
	}
	if len(r.Key) > MaxConcurrencyKey {
		return perr.New(CodeBadLimit, "use a concurrency key of at most "+strconv.Itoa(MaxConcurrencyKey)+" bytes (hash longer ones)", "concurrency key of queue %s is %d bytes", r.Queue, len(r.Key))
	}
	return nil
}

// Acquire takes a slot for r.Run without blocking. It returns the slot, or
// nil and how many waiting runs are ahead of r.Run (the caller retries
// later; the run keeps its place in line while it keeps asking within
// WaitTTL). A slot is granted only when fewer than r.Limit live holders
// exist and fewer waiting runs than free slots have a lower ticket.
func (s *Slots) Acquire(ctx context.Context, r Request) (*Slot, int, error) {
	if err := r.validate(); err != nil {
		return nil, 0, err
	}
	kv, err := s.kv.get(ctx)
	if err != nil {
		return nil, 0, err
	}
	key := SlotKey(s.ns, r.Queue, r.Key)
	var granted bool
	var ahead int
	_, err = update(ctx, kv, key, func(cur []byte) ([]byte, error) {
		st, err := decodeSlotState(cur, key)
		if err != nil {
			return nil, err
		}
		now := s.now()
		granted, ahead = s.decide(&st, r, now)
		return json.Marshal(st)
	})
	if err != nil || !granted {
		return nil, ahead, err
	}
	sl := &Slot{s: s, kv: kv, key: key, run: r.Run, holder: r.Holder, stop: make(chan struct{}), done: make(chan struct{})}
	go sl.renew()
	return sl, 0, nil
}

// decide applies one request to the state (pure but for now).
func (s *Slots) decide(st *SlotState, r Request, now time.Time) (granted bool, ahead int) {
	if st.Holders == nil {
		st.Holders = map[string]Holding{}
	}
	for run, h := range st.Holders {
		if !now.Before(h.Expires) {
			delete(st.Holders, run)
		}
	}
	kept := st.Waiting[:0]
	mine := -1
	for _, w := range st.Waiting {
		if w.Run == r.Run {
			w.Seen = now
			mine = len(kept)
		} else if now.Sub(w.Seen) > s.WaitTTL {
			continue
		}
		kept = append(kept, w)
	}
	st.Waiting = kept
	if h, ok := st.Holders[r.Run]; ok { // renewal or takeover of the same run
		h.Holder, h.Expires = r.Holder, now.Add(s.TTL)
		st.Holders[r.Run] = h
		st.removeWaiter(r.Run)
		return true, 0
	}
	if mine < 0 {
		if len(st.Waiting) >= s.MaxWaiting {
			return false, len(st.Waiting)
		}
		st.Waiting = append(st.Waiting, Waiter{Run: r.Run, Ticket: r.Ticket, Seen: now})
		sort.SliceStable(st.Waiting, func(i, j int) bool { return st.Waiting[i].Ticket < st.Waiting[j].Ticket })
	}
	for i, w := range st.Waiting {
		if w.Run == r.Run {
			ahead = i
		}
	}
	free := r.Limit - len(st.Holders)
	if free <= 0 || ahead >= free {
		return false, ahead
	}
	st.removeWaiter(r.Run)
	st.Holders[r.Run] = Holding{Holder: r.Holder, Since: now, Expires: now.Add(s.TTL)}
	return true, 0
}

func (st *SlotState) removeWaiter(run string) {
	for i, w := range st.Waiting {
		if w.Run == run {
			st.Waiting = append(st.Waiting[:i], st.Waiting[i+1:]...)
			return
		}
	}
}

func decodeSlotState(b []byte, key string) (SlotState, error) {
	var st SlotState
	if len(b) == 0 {
		return st, nil
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, perr.Wrap(err, CodeBadLimit, "delete the key with `nats kv del "+protocol.SlotsKV+" "+key+"` (it is rebuilt by the next runs)", "slot state %s is unreadable", key)
	}
	return st, nil
}

// Inspect returns the state of a queue and key (for `polos` and tests).
func (s *Slots) Inspect(ctx context.Context, queue, key string) (SlotState, error) {
	kv, err := s.kv.get(ctx)
	if err != nil {
		return SlotState{}, err
	}
	k := SlotKey(s.ns, queue, key)
	entry, err := kv.Get(ctx, k)
	if err != nil {
		if err == jetstream.ErrKeyNotFound {
			return SlotState{}, nil
		}
		return SlotState{}, perr.Wrap(err, events.CodeStoreIO, "", "cannot read slot state %s", k)
	}
	return decodeSlotState(entry.Value(), k)
}

// Slot is a taken slot. Its holder renews it in the background every TTL/3
// until Release.
type Slot struct {
	s      *Slots
	kv     jetstream.KeyValue
	key    string
	run    string
	holder string
	stop   chan struct{}
	done   chan struct{}

	mu   sync.Mutex
	lost bool
}

// Lost reports whether a renewal found the slot gone (expired and taken, or
// taken over by another executor advancing the same run).
func (sl *Slot) Lost() bool {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.lost
}

func (sl *Slot) renew() {
	defer close(sl.done)
	t := time.NewTicker(sl.s.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-sl.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), sl.s.TTL/3)
		_, err := update(ctx, sl.kv, sl.key, func(cur []byte) ([]byte, error) {
			st, err := decodeSlotState(cur, sl.key)
			if err != nil {
				return nil, err
			}
			h, ok := st.Holders[sl.run]
			if !ok || h.Holder != sl.holder {
				return nil, errLost
			}
			h.Expires = sl.s.now().Add(sl.s.TTL)
			st.Holders[sl.run] = h
			return json.Marshal(st)
		})
		cancel()
		if err == errLost {
			sl.mu.Lock()
			sl.lost = true
			sl.mu.Unlock()
			return
		}
	}
}

var errLost = perr.New("SLOT_LOST", "", "slot lost")

// Release frees the slot (unless the run was taken over by another
// holder, whose slot it now is). Safe to call twice. On error the slot
// still expires after TTL.
func (sl *Slot) Release(ctx context.Context) error {
	select {
	case <-sl.stop:
		return nil
	default:
		close(sl.stop)
	}
	<-sl.done
	_, err := update(ctx, sl.kv, sl.key, func(cur []byte) ([]byte, error) {
		st, err := decodeSlotState(cur, sl.key)
		if err != nil {
			return nil, err
		}
		if h, ok := st.Holders[sl.run]; !ok || h.Holder != sl.holder {
			return nil, errNoChange
		}
		delete(st.Holders, sl.run)
		return json.Marshal(st)
	})
	return err
}
