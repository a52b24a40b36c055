package events

import (
	"bufio"
	"encoding/json"
	"io"
	"time"

	"github.com/polos-run/polos/perr"
)

// UnmarshalJSON reads the JSON form written by MarshalJSON (the format of
// `polos history` and `polos tail -o jsonl`), so exported histories can be
// replayed in golden tests.
func (e *Event) UnmarshalJSON(b []byte) error {
	type plain Event
	var in struct {
		plain
		Time string          `json:"time"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*e = Event(in.plain)
	if in.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, in.Time)
		if err != nil {
			return err
		}
		e.Time = t.UnixNano()
	}
	if len(in.Data) > 0 {
		e.Data = []byte(in.Data)
	}
	if e.V == 0 {
		e.V = formatSingle
	}
	return nil
}

// ReadJSONL reads one event per line.
func ReadJSONL(r io.Reader) ([]Event, error) {
	var out []Event
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, perr.Wrap(err, CodeGarbage, "each line must be one event as `polos history -o jsonl` writes it", "line %d", line)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// WriteJSONL writes one event per line.
func WriteJSONL(w io.Writer, evs []Event) error {
	enc := json.NewEncoder(w)
	for _, e := range evs {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}
