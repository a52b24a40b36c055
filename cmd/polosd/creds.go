package main

import (
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos/config"
	"github.com/polos-run/polos/creds"
	"github.com/polos-run/polos/internal/app"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// credsCommand is `polosd creds`: the identities polosd issues, and the
// NATS server configuration that grants them their permissions (for
// running Polos on an external NATS server or cluster).
func credsCommand() *cli.Command {
	dataDir := &cli.StringFlag{Name: "data-dir", Usage: "data directory whose creds/ to use (default " + config.DefaultDataDir + ")", Value: config.DefaultDataDir, EnvVars: []string{"POLOS_DATA_DIR"}}
	namespaces := &cli.StringSliceFlag{Name: "namespace", Usage: "namespace (repeatable)", Value: cli.NewStringSlice(protocol.DefaultNamespace)}
	open := func(c *cli.Context) (*creds.Store, error) {
		return creds.Open(filepath.Join(config.ExpandHome(c.String("data-dir")), creds.DirName))
	}
	return &cli.Command{
		Name:  "creds",
		Usage: "list and issue identities; print the NATS accounts configuration for an external server",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list the identities of the data directory (no secrets)",
				Flags: []cli.Flag{dataDir},
				Action: func(c *cli.Context) error {
					st, err := open(c)
					if err != nil {
						return err
					}
					ids, err := st.List()
					if err != nil {
						return err
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "NAMESPACE\tROLE\tNAME\tPUBLIC KEY\tFILE")
					for _, id := range ids {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", id.Namespace, id.Role, id.Name, id.PublicKey, st.File(id.Namespace, id.Name))
					}
					return tw.Flush()
				},
			},
			{
				Name:      "add",
				Usage:     "issue a new identity (e.g. one operator per person); a running embedded polosd accepts it after a restart",
				UsageText: "polosd creds add --role operator --name alice [--namespace default] [--data-dir DIR]",
				Flags: []cli.Flag{dataDir,
					&cli.StringFlag{Name: "namespace", Value: protocol.DefaultNamespace, Usage: "namespace"},
					&cli.StringFlag{Name: "role", Required: true, Usage: "server | executor | sandbox | operator | observer"},
					&cli.StringFlag{Name: "name", Required: true, Usage: "identity name (recorded as who decided)"}},
				Action: func(c *cli.Context) error {
					st, err := open(c)
					if err != nil {
						return err
					}
					id, err := st.Add(c.String("namespace"), c.String("name"), protocol.Role(c.String("role")))
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "issued %s of namespace %s: %s\n", id, id.Namespace, st.File(id.Namespace, id.Name))
					return nil
				},
			},
			{
				Name:  "nats-config",
				Usage: "print the accounts block of a nats-server configuration for these identities (issuing the per-role ones first)",
				Description: "Include the output in the nats-server.conf of every server of the cluster (with jetstream enabled),\n" +
					"then give each polosd process its role's file with --nats-creds. See docs/security.md.",
				Flags: []cli.Flag{dataDir, namespaces},
				Action: func(c *cli.Context) error {
					st, err := open(c)
					if err != nil {
						return err
					}
					ids, err := st.Ensure(c.StringSlice("namespace"))
					if err != nil {
						return err
					}
					if len(ids) == 0 {
						return perr.New(app.CodeUsage, "pass --namespace", "no identities")
					}
					_, err = fmt.Fprint(c.App.Writer, creds.NATSConfig(ids))
					return err
				},
			},
		},
	}
}
