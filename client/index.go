package client

import (
	"context"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/internal/perr"
	"github.com/polos-run/polos/protocol"
)

// ListRuns reads the derived run index like List and also reports the
// entries it could not read: each one whose key names a run is listed from
// the run's history instead (index.List), so a damaged entry never hides a
// run. Listing.Problem says what was wrong and how to fix it.
func (c *Client) ListRuns(ctx context.Context, f ListFilter) (index.Listing, error) {
	if c.operator != "" {
		return c.listRemote(ctx, f)
	}
	l, err := index.List(ctx, c.js, c.ns, index.Filter{Status: f.Status, Agent: f.Agent, Limit: f.Limit}, c.Status)
	if perr.CodeOf(err) == events.CodeStoreIO {
		return l, perr.Wrap(err, CodeUnreachable, "start polosd once to provision the server", "run index unavailable")
	}
	return l, err
}

// RebuildIndex recomputes the run index of the client's namespace from the
// run histories (index.Rebuild).
func (c *Client) RebuildIndex(ctx context.Context) (index.Report, error) {
	if c.operator != "" {
		var r index.Report
		err := c.Control(ctx, protocol.CtlRebuild, struct{}{}, &r)
		return r, err
	}
	return index.Rebuild(ctx, c.js, c.ns)
}

// RawHistory returns the run's stored messages as they are, readable or
// not (`polos history --raw`).
func (c *Client) RawHistory(ctx context.Context, id string) ([]events.StoredMsg, error) {
	raw, err := c.store.RawHistory(ctx, id)
	if err == nil && len(raw) == 0 {
		return nil, notFound(id)
	}
	return raw, err
}
