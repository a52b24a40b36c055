// Command polosd is the Polos daemon: an embedded NATS JetStream server (or
// an existing NATS server or cluster), executors, a sandbox host and the
// HTTP API. See docs/cli.md.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/polos-run/polos/config"
	"github.com/polos-run/polos/creds"
	"github.com/polos-run/polos/internal/app"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox/local"
)

// Exit codes of polosd.
const (
	exitOK      = 0
	exitFailure = 1 // could not start (data dir locked, port in use, NATS unreachable)
	exitUsage   = 2 // bad flags or a broken config file
)

func main() { os.Exit(run(os.Args)) }

func run(args []string) int {
	code := exitOK
	a := &cli.App{
		Name:      "polosd",
		Usage:     "the Polos daemon: NATS JetStream, executors, sandbox host and HTTP API",
		UsageText: "polosd [--config polos.yaml] [--data-dir DIR] [--listen HOST:PORT] [--http HOST:PORT] [--executors N] [--role all|server|executor|sandbox] [--nats-url URL[,URL...]]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "polos.yaml with agents and server settings (default ./polos.yaml when present)", EnvVars: []string{"POLOS_CONFIG"}},
			&cli.StringFlag{Name: "role", Usage: "all | server (NATS + HTTP) | executor | sandbox", EnvVars: []string{"POLOS_ROLE"}},
			&cli.StringFlag{Name: "namespace", Usage: "namespace (tenant) served", EnvVars: []string{"POLOS_NAMESPACE"}},
			&cli.StringFlag{Name: "data-dir", Usage: "embedded server's data directory (default " + config.DefaultDataDir + ")", EnvVars: []string{"POLOS_DATA_DIR"}},
			&cli.StringFlag{Name: "listen", Usage: "embedded NATS client listener HOST:PORT (port 0 picks a free one; default " + config.DefaultListen + ")", EnvVars: []string{"POLOS_LISTEN"}},
			&cli.StringFlag{Name: "http", Usage: "HTTP API HOST:PORT, or off (default " + config.DefaultHTTP + ")", EnvVars: []string{"POLOS_HTTP"}},
			&cli.IntFlag{Name: "executors", Usage: fmt.Sprintf("executors in this process (default %d)", config.DefaultExecutors), EnvVars: []string{"POLOS_EXECUTORS"}},
			&cli.StringFlag{Name: "nats-url", Usage: "use this NATS server or cluster (comma-separated URLs) instead of the embedded one", EnvVars: []string{"POLOS_NATS_URL"}},
			&cli.StringFlag{Name: "nats-creds", Usage: "credentials for --nats-url: an identity a polosd issued (<data-dir>/creds/<ns>/<role>.nk) or a NATS .creds file (default: this role's identity in --data-dir, if any)", EnvVars: []string{"POLOS_NATS_CREDS"}},
			&cli.StringFlag{Name: "tls-ca", Usage: "CA certificate (PEM) to verify the NATS server of --nats-url", EnvVars: []string{"POLOS_TLS_CA"}},
			&cli.StringFlag{Name: "tls-cert", Usage: "client certificate (PEM) for NATS over TLS", EnvVars: []string{"POLOS_TLS_CERT"}},
			&cli.StringFlag{Name: "tls-key", Usage: "client key (PEM) for --tls-cert", EnvVars: []string{"POLOS_TLS_KEY"}},
			&cli.StringFlag{Name: "nats-user", Usage: "NATS user", EnvVars: []string{"POLOS_NATS_USER"}},
			&cli.StringFlag{Name: "nats-password", Usage: "NATS password", EnvVars: []string{"POLOS_NATS_PASSWORD"}},
			&cli.StringFlag{Name: "nats-token", Usage: "NATS token", EnvVars: []string{"POLOS_NATS_TOKEN"}},
			&cli.IntFlag{Name: "replicas", Usage: "copies of every stream, KV bucket and object store, applied to existing ones too (default: polos.yaml server.replicas, else existing assets keep theirs and new ones get 1)", EnvVars: []string{"POLOS_REPLICAS"}},
			&cli.StringFlag{Name: "api-key", Usage: "require Authorization: Bearer KEY on mutating HTTP endpoints", EnvVars: []string{"POLOS_API_KEY"}},
			&cli.StringFlag{Name: "ready-file", Usage: "write JSON {nats_url, http_url, pid, ...} here once serving", EnvVars: []string{"POLOS_READY_FILE"}},
			&cli.DurationFlag{Name: "shutdown-timeout", Usage: "how long in-flight steps get to finish on SIGTERM", Value: app.DefaultShutdownTimeout},
			&cli.StringFlag{Name: "sandbox-local-confinement", Usage: "required (default: exec in local sandboxes is confined; refuse to start where the kernel cannot) | none (UNSAFE: exec runs unconfined as this user)", EnvVars: []string{"POLOS_SANDBOX_LOCAL_CONFINEMENT"}},
			&cli.StringFlag{Name: "log-level", Usage: "debug | info | warn | error", Value: "info", EnvVars: []string{"POLOS_LOG_LEVEL"}},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return perr.New(app.CodeUsage, "see polosd --help", "unexpected argument %q", c.Args().First())
			}
			o, err := options(c)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return app.Run(ctx, o)
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return perr.Wrap(err, app.CodeUsage, "see polosd --help", "bad usage")
		},
		Commands: []*cli.Command{credsCommand()},
	}
	if err := a.Run(args); err != nil {
		fmt.Fprintln(os.Stderr, "polosd:", err)
		switch perr.CodeOf(err) {
		case app.CodeUsage, config.CodeInvalid, config.CodeUnreadable:
			code = exitUsage
		default:
			code = exitFailure
		}
	}
	return code
}

func options(c *cli.Context) (app.Options, error) {
	cfgPath := c.String("config")
	var cfg *config.Config
	if cfgPath == "" {
		if _, err := os.Stat(config.DefaultFileName); err == nil {
			cfgPath = config.DefaultFileName
		}
	}
	if cfgPath != "" {
		var err error
		if cfg, err = config.Load(cfgPath); err != nil {
			return app.Options{}, err
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return app.Options{}, perr.New(app.CodeUsage, "use debug, info, warn or error", "bad --log-level %q", c.String("log-level"))
	}
	o := app.Options{
		Config:                  cfg,
		Role:                    c.String("role"),
		Namespace:               c.String("namespace"),
		NATSURL:                 c.String("nats-url"),
		DataDir:                 c.String("data-dir"),
		Listen:                  c.String("listen"),
		HTTP:                    c.String("http"),
		Executors:               c.Int("executors"),
		APIKey:                  c.String("api-key"),
		Replicas:                c.Int("replicas"),
		ReadyFile:               c.String("ready-file"),
		ShutdownTimeout:         c.Duration("shutdown-timeout"),
		SandboxLocalConfinement: c.String("sandbox-local-confinement"),
		Logger:                  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	if v := o.SandboxLocalConfinement; v != "" && v != local.ConfinementRequired && v != local.ConfinementNone {
		return o, perr.New(app.CodeUsage, "use --sandbox-local-confinement "+local.ConfinementRequired+" or "+local.ConfinementNone, "bad --sandbox-local-confinement %q", v)
	}
	if c.IsSet("replicas") && o.Replicas <= 0 {
		return o, perr.New(app.CodeUsage, "pass --replicas 1 (one machine) or 3 or 5 (a cluster), or leave it out to keep the existing assets' count", "bad --replicas %d", o.Replicas)
	}
	if c.IsSet("executors") && o.Executors <= 0 {
		return o, perr.New(app.CodeUsage, "pass --executors 1 or more (use --role sandbox for a process without executors)", "bad --executors %d", o.Executors)
	}
	if f := c.String("nats-creds"); f != "" {
		cf, err := creds.Load(f)
		if err != nil {
			return o, err
		}
		o.NATSOptions = append(o.NATSOptions, cf.NATSOptions()...)
	}
	if ca := c.String("tls-ca"); ca != "" {
		o.NATSOptions = append(o.NATSOptions, nats.RootCAs(ca))
	}
	if cert := c.String("tls-cert"); cert != "" {
		o.NATSOptions = append(o.NATSOptions, nats.ClientCert(cert, c.String("tls-key")))
	}
	if u := c.String("nats-user"); u != "" {
		o.NATSOptions = append(o.NATSOptions, nats.UserInfo(u, c.String("nats-password")))
	}
	if t := c.String("nats-token"); t != "" {
		o.NATSOptions = append(o.NATSOptions, nats.Token(t))
	}
	if strings.TrimSpace(o.NATSURL) == "" && len(o.NATSOptions) > 0 && o.Role != app.RoleExecutor && o.Role != app.RoleSandbox {
		return o, perr.New(app.CodeUsage, "pass --nats-url with the credentials options", "NATS credentials given without --nats-url")
	}
	return o, nil
}
