package docker

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/polos-run/polos/sandbox"
)

// Latency benchmarks; run with
//
//	go test ./sandbox/docker -run XXX -bench . -benchtime 20x
//
// Each reports the median (p50-ms) besides Go's mean (ns/op).

func reportP50(b *testing.B, samples []time.Duration) {
	slices.Sort(samples)
	if len(samples) > 0 {
		b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "p50-ms")
	}
}

func BenchmarkCreate(b *testing.B) {
	p := newTestProvider(b, Options{})
	ctx := context.Background()
	var samples []time.Duration
	for b.Loop() {
		start := time.Now()
		be, err := p.CreateBackend(ctx, testSpec(b))
		if err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
		b.StopTimer()
		if err := p.Destroy(ctx, be.Info()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	reportP50(b, samples)
}

func BenchmarkExec(b *testing.B) {
	p := newTestProvider(b, Options{})
	be := newBackend(b, p, testSpec(b))
	ctx := context.Background()
	var samples []time.Duration
	for b.Loop() {
		start := time.Now()
		res, err := be.Exec(ctx, sandbox.ExecRequest{Command: "echo hi", TimeoutSec: 60})
		if err != nil || res.Stdout != "hi\n" {
			b.Fatal(res, err)
		}
		samples = append(samples, time.Since(start))
	}
	reportP50(b, samples)
}

// BenchmarkRead reads a 10 KB file with ReadFile (an exec of head inside
// the container).
func BenchmarkRead(b *testing.B) {
	p := newTestProvider(b, Options{})
	be := newBackend(b, p, testSpec(b))
	ctx := context.Background()
	if err := be.WriteFile(ctx, "f.txt", make([]byte, 10_000)); err != nil {
		b.Fatal(err)
	}
	var samples []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := be.ReadFile(ctx, "f.txt", sandbox.MaxReadFileBytes); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
	}
	reportP50(b, samples)
}

// BenchmarkReadArchive is the alternative we did not choose (ADR 0120):
// CopyFromContainer, the engine reading the file from outside the
// container (bind-mounted workspace: a tmpfs one is invisible to it).
func BenchmarkReadArchive(b *testing.B) {
	p := newTestProvider(b, Options{})
	spec := testSpec(b)
	spec.WorkspaceDir = hostWorkspace(b)
	be := newBackend(b, p, spec)
	ctx := context.Background()
	if err := be.WriteFile(ctx, "f.txt", make([]byte, 10_000)); err != nil {
		b.Fatal(err)
	}
	var samples []time.Duration
	for b.Loop() {
		start := time.Now()
		rc, _, err := testClient.CopyFromContainer(ctx, be.Info().ID, "/workspace/f.txt")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, rc)
		rc.Close()
		samples = append(samples, time.Since(start))
	}
	reportP50(b, samples)
}
