package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/urfave/cli/v2"
)

// Command is `polos bench`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure Polos against the raw JetStream floor on an embedded server (fsync on)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "quick", Usage: "small sizes, one repeat (under two minutes)"},
			&cli.BoolFlag{Name: "no-fsync", Usage: "turn fsync off (benchmark only: not durable; the output says so)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "text|json"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a Go CPU profile of the whole benchmark (server included) to `FILE`"},
		},
		Action: func(c *cli.Context) error {
			if path := c.String("cpuprofile"); path != "" {
				f, err := os.Create(path)
				if err != nil {
					return cli.Exit("bench: cannot create the CPU profile: "+err.Error(), 1)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return cli.Exit("bench: cannot start the CPU profile: "+err.Error(), 1)
				}
				defer pprof.StopCPUProfile()
			}
			sz := FullSizes
			if c.Bool("quick") {
				sz = QuickSizes
			}
			rep, err := Run(c.Context, sz, c.Bool("no-fsync"))
			if err != nil {
				return cli.Exit("bench failed: "+err.Error(), 1)
			}
			if c.String("output") == "json" {
				return json.NewEncoder(os.Stdout).Encode(rep)
			}
			PrintText(rep)
			return nil
		},
	}
}

// PrintText prints the report for people, with ratios to the floor.
func PrintText(r *Report) {
	fmt.Printf("Polos benchmark (fsync=%v, %s, nats-server %s, %d CPUs, %d repeat(s); medians)\n", r.Fsync, r.GoVersion, r.NatsServerVersion, r.CPUs, r.Repeats)
	if r.Note != "" {
		fmt.Println("NOTE:", r.Note)
	}
	fmt.Printf("  raw JetStream CAS append (floor)   p50 %8.0f µs  p99 %8.0f µs\n", r.FloorAppendP50us, r.FloorAppendP99us)
	fmt.Printf("  durable step (one append)          p50 %8.0f µs  p99 %8.0f µs  = %.2fx floor\n", r.StepP50us, r.StepP99us, r.StepOverFloor)
	fmt.Printf("  idempotent step (no start marker)  p50 %8.0f µs              = %.2fx floor\n", r.IdempotentStepP50us, r.IdempotentStepP50us/r.FloorAppendP50us)
	fmt.Printf("  start -> result, 1-step run        p50 %8.0f µs  p99 %8.0f µs\n", r.StartCompleteP50us, r.StartCompleteP99us)
	fmt.Printf("  100 concurrent runs (%d partitions) %7.0f steps/s (floor %0.f appends/s = %.0f two-append steps/s)\n", r.RunPartitions, r.StepsPerSec, r.FloorAppendsPerSecC, r.FloorAppendsPerSecC/2)
	fmt.Printf("  same, middle half of the steps     %8.0f steps/s (start ramp and finishing tail left out)\n", r.StepsPerSecSteady)
	fmt.Printf("  same, group commit on (opt-in)     %8.0f steps/s (average batch %.1f appends)\n", r.StepsPerSecGroup, r.GroupAvgBatch)
	fmt.Printf("  step latency under that load       p50 %8.0f µs  p99 %8.0f µs  (%.2f CPU cores busy of %d)\n", r.StepUnderLoadP50us, r.StepUnderLoadP99us, r.LoadCPUCores, r.CPUs)
	fmt.Printf("  read 10k events: direct get %.1f ms, ordered consumer %.1f ms; read+replay %.1f ms\n", r.ReadDirectGet10kMs, r.ReadOrderedCons10kMs, r.Replay10kMs)
	if r.LocalExecNote != "" {
		fmt.Println("  local exec true: not measured:", r.LocalExecNote)
	} else if r.LocalExecConfinedMs > 0 {
		fmt.Printf("  local exec true                    confined %.2f ms, unconfined %.2f ms = %.2fx\n", r.LocalExecConfinedMs, r.LocalExecUnconfinedMs, r.LocalExecRatio)
	}
}
