package polos_test

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// The fault suite (`make chaos`, `make chaos FULL=1`): each fault test
// injects one kind of fault, checks that it landed, and reports a row of
// the table in docs/benchmarks.md.
const (
	// EnvChaosFull, set to "1", runs the fault tests at full size.
	EnvChaosFull = "POLOS_CHAOS_FULL"
	// EnvChaosTable names a file each fault test appends its row to
	// (markdown); `make chaos` prints it.
	EnvChaosTable = "POLOS_CHAOS_TABLE"
)

// chaosSizes is how big a fault test is: runs and faults to inject.
type chaosSizes struct {
	runs, faults int
	full         bool
}

// chaosSize picks the reduced size (CI) or, with POLOS_CHAOS_FULL=1, the full one.
func chaosSize(runs, faults, fullRuns, fullFaults int) chaosSizes {
	if os.Getenv(EnvChaosFull) == "1" {
		return chaosSizes{runs: fullRuns, faults: fullFaults, full: true}
	}
	return chaosSizes{runs: runs, faults: faults}
}

// chaosRow is one line of the fault table.
type chaosRow struct {
	Fault    string
	Runs     int
	Faults   int // faults injected
	InFlight int // steps (or decisions) in flight when a fault landed
	Lost     int // acknowledged events lost
	Rerun    int // completed steps run again (flagged uncertain: in flight at a fault)
	Stuck    int // runs that did not finish
	Recovery []time.Duration
	Note     string
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// reportChaos logs the row and appends it to $POLOS_CHAOS_TABLE.
func reportChaos(t *testing.T, r chaosRow) {
	t.Helper()
	line := fmt.Sprintf("| %s | %d | %d | %d | %d | %d | %d | %s | %s | %s |", r.Fault, r.Runs, r.Faults, r.InFlight, r.Lost, r.Rerun, r.Stuck,
		ms(percentile(r.Recovery, 50)), ms(percentile(r.Recovery, 99)), r.Note)
	t.Log("fault table: " + line)
	if path := os.Getenv(EnvChaosTable); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fmt.Fprintln(f, line)
	}
}
