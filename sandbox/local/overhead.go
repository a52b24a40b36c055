package local

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/polos-run/polos/sandbox"
)

// Overhead is the cost of confinement, measured by MeasureOverhead: the
// median wall time of one exec of `true`, confined and unconfined.
type Overhead struct {
	Confined   time.Duration
	Unconfined time.Duration
	Runs       int
}

// Ratio is Confined / Unconfined.
func (o Overhead) Ratio() float64 {
	if o.Unconfined <= 0 {
		return 0
	}
	return float64(o.Confined) / float64(o.Unconfined)
}

// ExecPair is one pair of measured execs.
type ExecPair struct{ Confined, Unconfined time.Duration }

// OverheadRunner measures exec `true` through a confined and an unconfined
// sandbox on one temporary workspace. Close removes it.
type OverheadRunner struct {
	dir      string
	confined sandbox.Sandbox
	plain    sandbox.Sandbox
}

// NewOverheadRunner creates both sandboxes; it fails with
// CodeConfinementUnavailable where the kernel cannot confine.
func NewOverheadRunner(ctx context.Context) (*OverheadRunner, error) {
	dir, err := os.MkdirTemp("", "polos-exec-overhead-")
	if err != nil {
		return nil, err
	}
	r := &OverheadRunner{dir: dir}
	spec := sandbox.Spec{Provider: sandbox.ProviderLocal, Owner: "overhead", WorkspaceDir: filepath.Join(dir, "ws")}
	tmpRoot := filepath.Join(dir, "tmp")
	if r.confined, err = NewWithOptions(Options{TmpRoot: tmpRoot}).Create(ctx, spec); err == nil {
		r.plain, err = NewWithOptions(Options{TmpRoot: tmpRoot, Confinement: ConfinementNone}).Create(ctx, spec)
	}
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Pair runs `true` confined, then unconfined, and times both.
func (r *OverheadRunner) Pair(ctx context.Context) (ExecPair, error) {
	var p ExecPair
	for _, x := range []struct {
		sb  sandbox.Sandbox
		out *time.Duration
	}{{r.confined, &p.Confined}, {r.plain, &p.Unconfined}} {
		start := time.Now()
		if _, err := x.sb.Exec(ctx, sandbox.ExecRequest{Command: "true"}); err != nil {
			return p, err
		}
		*x.out = time.Since(start)
	}
	return p, nil
}

// Close removes the temporary workspace.
func (r *OverheadRunner) Close() { os.RemoveAll(r.dir) }

// MeasureOverhead runs n pairs (after one warm-up) and returns the medians.
func MeasureOverhead(ctx context.Context, n int) (Overhead, error) {
	r, err := NewOverheadRunner(ctx)
	if err != nil {
		return Overhead{}, err
	}
	defer r.Close()
	if _, err := r.Pair(ctx); err != nil {
		return Overhead{}, err
	}
	pairs := make([]ExecPair, 0, n)
	for range n {
		p, err := r.Pair(ctx)
		if err != nil {
			return Overhead{}, err
		}
		pairs = append(pairs, p)
	}
	return Medians(pairs), nil
}

// Medians of a set of pairs.
func Medians(pairs []ExecPair) Overhead {
	c := make([]time.Duration, len(pairs))
	u := make([]time.Duration, len(pairs))
	for i, p := range pairs {
		c[i], u[i] = p.Confined, p.Unconfined
	}
	med := func(x []time.Duration) time.Duration {
		if len(x) == 0 {
			return 0
		}
		slices.Sort(x)
		return x[len(x)/2]
	}
	return Overhead{Confined: med(c), Unconfined: med(u), Runs: len(pairs)}
}
