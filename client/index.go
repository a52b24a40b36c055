package client

import (
	"context"
	"fmt"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// ListRuns reads the derived run index like List and also reports the
// entries it could not read: each one whose key names a run is listed from
// the run's history instead (index.List), so a damaged entry never hides a
// run. Listing.Problem says what was wrong and how to fix it.
func (c *Client) ListRuns(ctx context.Context, f ListFilter) (index.Listing, error) {
	if f.Stuck {
		return c.listStuck(ctx, f)
	}
	if c.operator != "" {
		return c.listRemote(ctx, f)
	}
	l, err := index.List(ctx, c.js, c.ns, index.Filter{Status: f.Status, Agent: f.Agent, Limit: f.Limit}, c.Status)
	if perr.CodeOf(err) == events.CodeStoreIO {
		return l, protocol.Unavailable(err, CodeUnreachable, "run index unavailable")
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

// listStuck lists the running runs whose workflow no live executor serves
// (protocol.AnyoneServes, one probe per workflow), and says so in
// Summary.Stuck; a run pinned to a build no live executor runs is not
// stuck (another build continues it) but the reason says which build it
// will leave.
func (c *Client) listStuck(ctx context.Context, f ListFilter) (index.Listing, error) {
	all := f
	all.Stuck, all.Status, all.Limit = false, events.StatusRunning, 0
	l, err := c.ListRuns(ctx, all)
	if err != nil {
		return l, err
	}
	served := map[string]bool{}
	var stuck []events.Summary
	for _, r := range l.Runs {
		ok, seen := served[r.Agent]
		if !seen {
			ok = protocol.AnyoneServes(ctx, c.nc, c.ns, r.Agent)
			served[r.Agent] = ok
		}
		if ok {
			continue
		}
		r.Stuck = fmt.Sprintf("no live executor serves workflow %q: start one that registers it (its tasks are handed back until then, none is dropped)", r.Agent)
		if r.BuildID != "" && !protocol.AnyoneRuns(ctx, c.nc, c.ns, r.BuildID) {
			r.Stuck += fmt.Sprintf("; the run is pinned to build %s, which no live executor runs", r.BuildID)
		}
		stuck = append(stuck, r)
		if f.Limit > 0 && len(stuck) == f.Limit {
			break
		}
	}
	l.Runs = stuck
	return l, nil
}
