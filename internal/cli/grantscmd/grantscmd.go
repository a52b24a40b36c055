// Package grantscmd is `polos grants list|revoke`: the allow-always grants
// people gave agents (hitl.Grants in the polos_grants KV bucket).
package grantscmd

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/internal/cli/conn"
	"github.com/polos-run/polos/internal/textsafe"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// callTimeout bounds one grants command.
const callTimeout = 10 * time.Second

// Command returns `grants` with its subcommands list and revoke.
func Command() *cli.Command {
	connFlags := conn.Flags()
	return &cli.Command{
		Name:  "grants",
		Usage: "list and revoke allow-always grants",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list grants (commands, tools and paths that run without asking)",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "scope", Usage: "session or agent"},
					&cli.StringFlag{Name: "scope-id", Usage: "a session ID or agent name"},
					&cli.StringFlag{Name: "kind", Usage: "exec, tool or path"},
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
				}, connFlags...),
				Action: list,
			},
			{
				Name:      "revoke",
				Usage:     "revoke a grant: the next matching request asks again",
				ArgsUsage: "GRANT_ID",
				Flags:     connFlags,
				Action:    revoke,
			},
		},
	}
}

func list(c *cli.Context) error {
	ctx, cancel := context.WithTimeout(c.Context, callTimeout)
	defer cancel()
	f := hitl.GrantFilter{Scope: hitl.Scope(c.String("scope")), ScopeID: c.String("scope-id"), Kind: hitl.Kind(c.String("kind"))}
	switch f.Scope {
	case "", hitl.ScopeSession, hitl.ScopeAgent:
	default:
		return perr.New(hitl.CodeBadGrant, "use --scope session or --scope agent", "unknown scope %q", f.Scope)
	}
	switch f.Kind {
	case "", hitl.KindExec, hitl.KindTool, hitl.KindPath:
	default:
		return perr.New(hitl.CodeBadGrant, "use --kind exec, tool or path", "unknown kind %q", f.Kind)
	}
	cl, err := conn.Connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	var gs []hitl.Grant
	if err := cl.Control(ctx, protocol.CtlGrants, protocol.GrantsRequest{Scope: string(f.Scope), ScopeID: f.ScopeID, Kind: string(f.Kind)}, &gs); err != nil {
		return err
	}
	w := c.App.Writer
	if c.Bool("json") || c.String("output") == "json" {
		if gs == nil {
			gs = []hitl.Grant{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(gs)
	}
	if len(gs) == 0 {
		fmt.Fprintln(w, "no grants")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSCOPE\tSCOPE ID\tKIND\tALLOWS\tDECIDED BY\tAT")
	for _, x := range gs {
		allows := x.Pattern
		if x.ExactOnly {
			allows = "exactly: " + allows
		} else {
			allows = "pattern: " + allows
		}
		// The pattern is what an agent asked for: shown escaped (textsafe).
		esc := textsafe.Escape
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", esc(x.ID), esc(string(x.Scope)), esc(x.ScopeID), esc(string(x.Kind)), esc(allows), esc(x.DecidedBy), x.At.Format(time.RFC3339))
	}
	return tw.Flush()
}

func revoke(c *cli.Context) error {
	if c.NArg() != 1 {
		return perr.New("BAD_ARGS", "run `polos grants list` to find the ID", "revoke takes exactly one grant ID, got %d arguments", c.NArg())
	}
	cl, err := conn.Connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(c.Context, callTimeout)
	defer cancel()
	var x hitl.Grant
	if err := cl.Control(ctx, protocol.CtlRevokeGrant, protocol.RevokeGrantRequest{ID: c.Args().First()}, &x); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "revoked %s (%s %s %q for %s %s)\n", x.ID, x.Kind, map[bool]string{true: "exactly", false: "pattern"}[x.ExactOnly], x.Pattern, x.Scope, x.ScopeID)
	return nil
}
