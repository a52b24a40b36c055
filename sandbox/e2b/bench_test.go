package e2b_test

import (
	"slices"
	"testing"
	"time"

	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/e2b/e2bfake"
)

// BenchmarkExecRoundTrip measures exec of "true" against the fake: HTTP
// round trip, Connect stream, and a real process start. It reports p50 and
// p90 next to the mean.
func BenchmarkExecRoundTrip(b *testing.B) {
	_, _, be := newBackend(b, e2bfake.Options{})
	ctx := testCtx(b)
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := be.Exec(ctx, sandbox.ExecRequest{Command: "true", TimeoutSec: 60}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
}

// BenchmarkReadFile measures ReadFile of a small file: the symlink check
// (one process start) plus GET /files.
func BenchmarkReadFile(b *testing.B) {
	_, _, be := newBackend(b, e2bfake.Options{})
	ctx := testCtx(b)
	if err := be.WriteFile(ctx, "f.txt", []byte("hello\n")); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := be.ReadFile(ctx, "f.txt", 100); err != nil {
			b.Fatal(err)
		}
	}
}
