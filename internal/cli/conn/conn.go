// Package conn is how every `polos` command finds and reaches a Polos
// server: flags, the local polosd's endpoint and credentials, TLS.
//
// With no flags, the CLI uses the polosd whose data directory is --data-dir
// (POLOS_DATA_DIR, default ~/.polos): its address from polosd.json there,
// and its operator credentials from creds/<namespace>/operator.nk, which
// only the user who started polosd can read. --server and --creds point
// elsewhere.
package conn

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/config"
	"github.com/polos-run/polos/creds"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Defaults.
const (
	DefaultServer    = "nats://127.0.0.1:4222"
	DefaultNamespace = protocol.DefaultNamespace
)

// Flags are the connection flags every command takes.
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "server", Usage: "NATS URL(s) of the Polos server (default: the local polosd of --data-dir, else " + DefaultServer + ")", EnvVars: []string{"POLOS_NATS_URL"}},
		&cli.StringFlag{Name: "creds", Usage: "credentials file: an identity polosd issued (<data-dir>/creds/<namespace>/<name>.nk) or a NATS .creds file (default: the local polosd's operator)", EnvVars: []string{"POLOS_CREDS", "POLOS_NATS_CREDS"}},
		&cli.StringFlag{Name: "data-dir", Usage: "data directory of the local polosd, where the CLI finds its address and credentials", Value: config.DefaultDataDir, EnvVars: []string{"POLOS_DATA_DIR"}},
		&cli.StringFlag{Name: "namespace", Usage: "namespace (tenant)", Value: DefaultNamespace, EnvVars: []string{"POLOS_NAMESPACE"}},
		&cli.StringFlag{Name: "tls-ca", Usage: "CA certificate (PEM) to verify the NATS server", EnvVars: []string{"POLOS_TLS_CA"}},
		&cli.StringFlag{Name: "tls-cert", Usage: "client certificate (PEM) for NATS over TLS", EnvVars: []string{"POLOS_TLS_CERT"}},
		&cli.StringFlag{Name: "tls-key", Usage: "client key (PEM) for --tls-cert", EnvVars: []string{"POLOS_TLS_KEY"}},
	}
}

// Target is where and as whom a command connects.
type Target struct {
	URL       string
	Namespace string
	Creds     *creds.File // nil: no credentials found
	TLS       []nats.Option
}

// Resolve works out the target from the flags and the local polosd.
func Resolve(c *cli.Context) (Target, error) {
	t := Target{URL: c.String("server"), Namespace: c.String("namespace")}
	if t.Namespace == "" {
		t.Namespace = DefaultNamespace
	}
	dataDir := config.ExpandHome(c.String("data-dir"))
	if t.URL == "" {
		t.URL = DefaultServer
		if e, ok := creds.ReadEndpoint(dataDir); ok {
			t.URL = e.NATSURL
		}
	}
	path := c.String("creds")
	if path == "" {
		local := filepath.Join(dataDir, creds.DirName, t.Namespace, string(protocol.RoleOperator)+creds.SeedExt)
		if _, err := os.Stat(local); err == nil {
			path = local
		}
	}
	if path != "" {
		f, err := creds.Load(path)
		if err != nil {
			return t, perr.Wrap(err, client.CodeUnauthorized, "pass --creds with a readable credentials file", "cannot use credentials %s", path)
		}
		if f.Namespace != "" && f.Namespace != t.Namespace {
			return t, perr.New(client.CodeUnauthorized, "pass --namespace "+f.Namespace+", or credentials of namespace "+t.Namespace,
				"credentials %s are for namespace %s, not %s", path, f.Namespace, t.Namespace)
		}
		t.Creds = &f
	}
	if ca := c.String("tls-ca"); ca != "" {
		t.TLS = append(t.TLS, nats.RootCAs(ca))
	}
	if cert := c.String("tls-cert"); cert != "" {
		t.TLS = append(t.TLS, nats.ClientCert(cert, c.String("tls-key")))
	}
	return t, nil
}

// Connect dials the target as its identity. The CLI changes runs only
// through polosd's control service, which records who decided: as the
// credentials' identity (the local polosd's "operator" by default); with
// observer credentials it only reads.
func Connect(c *cli.Context) (*client.Client, error) {
	t, err := Resolve(c)
	if err != nil {
		return nil, err
	}
	opts := append([]nats.Option{}, t.TLS...)
	copts := []client.Option{client.AsOperator(string(protocol.RoleOperator))}
	if t.Creds != nil {
		opts = append(opts, t.Creds.NATSOptions()...)
		switch t.Creds.Role {
		case protocol.RoleObserver, protocol.RoleSandbox:
			copts = []client.Option{client.ReadOnly()}
		default:
			copts = []client.Option{client.AsOperator(t.Creds.Name)}
		}
	}
	cl, err := client.Connect(t.URL, t.Namespace, opts, copts...)
	if err != nil && t.Creds == nil && perr.CodeOf(err) == client.CodeUnauthorized {
		return nil, perr.Wrap(errors.Unwrap(err), client.CodeUnauthorized,
			"run the CLI as the user who started polosd (pass --data-dir if it is not "+config.DefaultDataDir+"), or pass --creds FILE",
			"the server at %s needs credentials, and none were found for namespace %s", t.URL, t.Namespace)
	}
	return cl, err
}
