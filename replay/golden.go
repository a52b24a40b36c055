package replay

import (
	"context"
	"encoding/json"
	"time"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/perr"
)

// ReplayOnly replays a recorded history in memory, with no store and no
// side effects: the pure core, for golden tests and `polos history`
// checks. It returns the outcome and the events the code tried to append
// (none for a good history of a finished or waiting run; a run_parked for a
// history the code no longer matches). Steps are not executed: a step
// without a recorded result makes the outcome Infrastructure with
// CodeReplayIncomplete.
//
// A finished history is replayed without its terminal event, so the code is
// checked against every recorded call; the terminal event the code then
// produces is returned among the appended events for the caller to compare.
func ReplayOnly(hist []events.Event, wf WorkflowFunc, now time.Time) (Outcome, []events.Event) {
	if n := len(hist); n > 1 && hist[n-1].Type.IsTerminal() {
		hist = hist[:n-1]
	}
	j := &memJournal{}
	r, err := NewRunner(hist, j, inertEffects{})
	if err != nil {
		return Outcome{Kind: Infrastructure, Err: err}, nil
	}
	r.Clock = func() time.Time { return now }
	r.stepGuard = true
	o := r.Run(context.Background(), wf)
	return o, j.appended
}

// CodeReplayIncomplete: a replay-only run reached code with no record.
const CodeReplayIncomplete perr.Code = "REPLAY_INCOMPLETE"

type memJournal struct {
	appended []events.Event
}

func (m *memJournal) Append(_ context.Context, ev *events.Event) (uint64, error) {
	m.appended = append(m.appended, *ev)
	return uint64(len(m.appended)), nil
}

func (m *memJournal) Refresh(context.Context) ([]events.Event, error) { return nil, nil }

type inertEffects struct{}

func (inertEffects) ScheduleWake(context.Context, string, string, time.Time) error { return nil }
func (inertEffects) StartChild(context.Context, string, string, string, json.RawMessage, string) error {
	return nil
}
func (inertEffects) ChildOutcome(context.Context, string) (*events.Event, error) { return nil, nil }
func (inertEffects) TopicLastSeq(context.Context, string) (uint64, error)        { return 0, nil }
func (inertEffects) TopicEventAfter(context.Context, string, uint64) ([]byte, bool, error) {
	return nil, false, nil
}
func (inertEffects) RegisterWaiter(context.Context, string, string) error { return nil }
