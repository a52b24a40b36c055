package dispatch_test

import (
	"slices"
	"testing"
	"time"

	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/local"
)

// benchRead times a 1 KiB read and reports its median in µs.
func benchRead(b *testing.B, sb sandbox.Sandbox) {
	ctx := ctxFor(b)
	content := string(make([]byte, 0, 1024))
	for len(content) < 1024 {
		content += "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"
	}
	if _, err := sb.Write(ctx, sandbox.WriteRequest{Path: "bench.txt", Content: content}); err != nil {
		b.Fatal(err)
	}
	var times []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := sb.Read(ctx, sandbox.ReadRequest{Path: "bench.txt"}); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds()), "p50-µs")
}

func BenchmarkReadDirect(b *testing.B) {
	sb, err := local.New().Create(ctxFor(b), localSpec(b))
	if err != nil {
		b.Fatal(err)
	}
	benchRead(b, sb)
}

func BenchmarkReadDispatch(b *testing.B) {
	s := startServer(b, 0)
	startHost(b, s, local.New())
	sb, err := newClient(b, s).Create(ctxFor(b), localSpec(b))
	if err != nil {
		b.Fatal(err)
	}
	benchRead(b, sb)
}
