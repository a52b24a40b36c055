package local_test

import (
	"testing"
	"time"

	"github.com/polos-run/polos/sandbox/local"
)

// BenchmarkExecTrue times `exec true` confined and unconfined, alternating
// (so both see the same machine load), and reports both medians and their
// ratio:
//
//	go test -run '^$' -bench ExecTrue -count 5 ./sandbox/local/
func BenchmarkExecTrue(b *testing.B) {
	r, err := local.NewOverheadRunner(ctxFor(b))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var pairs []local.ExecPair
	for b.Loop() {
		p, err := r.Pair(ctxFor(b))
		if err != nil {
			b.Fatal(err)
		}
		pairs = append(pairs, p)
	}
	o := local.Medians(pairs)
	b.ReportMetric(float64(o.Confined)/float64(time.Millisecond), "confined-ms")
	b.ReportMetric(float64(o.Unconfined)/float64(time.Millisecond), "unconfined-ms")
	b.ReportMetric(o.Ratio(), "ratio")
	b.Logf("exec true over %d pairs: confined %v, unconfined %v, ratio %.2f", o.Runs, o.Confined, o.Unconfined, o.Ratio())
}
