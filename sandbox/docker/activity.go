package docker

import (
	"sync"
	"time"
)

// activity remembers, per container, when a tool last used it and how many
// operations are in flight. It lives in the provider's memory: after a
// restart of the sandbox host, ReapIdle falls back to the container's start
// time, which can only make a sandbox look idle sooner, never later than
// its real last use plus the restart gap.
type activity struct {
	now func() time.Time

	mu       sync.Mutex
	last     map[string]time.Time
	inflight map[string]int
}

func newActivity(now func() time.Time) *activity {
	return &activity{now: now, last: map[string]time.Time{}, inflight: map[string]int{}}
}

// begin marks an operation on id as running; the returned func ends it.
func (a *activity) begin(id string) func() {
	a.mu.Lock()
	a.inflight[id]++
	a.last[id] = a.now()
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		if a.inflight[id]--; a.inflight[id] <= 0 {
			delete(a.inflight, id)
		}
		a.last[id] = a.now()
		a.mu.Unlock()
	}
}

// touch records a use of id without an operation (create, open).
func (a *activity) touch(id string) {
	a.mu.Lock()
	a.last[id] = a.now()
	a.mu.Unlock()
}

// idleSince returns when id was last used (ok false if never seen) and
// whether an operation is running on it now.
func (a *activity) idleSince(id string) (t time.Time, ok, busy bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok = a.last[id]
	return t, ok, a.inflight[id] > 0
}

func (a *activity) forget(id string) {
	a.mu.Lock()
	delete(a.last, id)
	a.mu.Unlock()
}
