package sandbox

import (
	"context"

	"github.com/polos-run/polos/perr"
)

type runKey struct{}

// WithRun returns ctx carrying the ID of the run on whose behalf sandbox
// requests are made. Sandbox hosts serve a sandbox only to the run it was
// created for (or shared with): the dispatch client sends this run with
// every request (create, open, destroy, share and the six tools). Without
// it the client sends Spec.Owner, and Destroy and Share, which take no
// Spec, are refused with CodeNotYours. In-process providers ignore it.
func WithRun(ctx context.Context, runID string) context.Context {
	return context.WithValue(ctx, runKey{}, runID)
}

// RunOf returns the run set by WithRun, or "".
func RunOf(ctx context.Context) string {
	s, _ := ctx.Value(runKey{}).(string)
	return s
}

// Sharer is implemented by providers whose sandboxes are bound to the run
// that created them (the dispatch client): Share returns an Info with which
// run `to` may use the sandbox too. The run in ctx (WithRun) must be the
// sandbox's owner. The shared Info cannot destroy the sandbox: that stays
// with the run that created it.
type Sharer interface {
	Share(ctx context.Context, info Info, to string) (Info, error)
}

// Share returns the Info with which run `to` may use the sandbox of info:
// p.Share when p binds sandboxes to runs (Sharer), else info itself.
func Share(ctx context.Context, p Provider, info Info, to string) (Info, error) {
	if s, ok := p.(Sharer); ok {
		return s.Share(ctx, info, to)
	}
	return info, nil
}

// MustRecreate reports whether err means the run must create a new sandbox:
// the sandbox is gone (CodeSandboxLost), or its Info was recorded before
// sandbox hosts sealed sandboxes (CodeUnsealed) and no host will serve it.
func MustRecreate(err error) bool {
	return perr.Has(err, CodeSandboxLost) || perr.Has(err, CodeUnsealed)
}
