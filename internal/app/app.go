// Package app wires polosd: NATS (embedded or an existing server or
// cluster), stream provisioning, executors, a sandbox host and the HTTP API,
// according to a role, and shuts them down in order on SIGTERM.
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/config"
	"github.com/polos-run/polos/control"
	"github.com/polos-run/polos/creds"
	"github.com/polos-run/polos/embed"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/health"
	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/httpapi"
	"github.com/polos-run/polos/index"
	"github.com/polos-run/polos/metrics"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/ratelimit"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/dispatch"
	"github.com/polos-run/polos/sandbox/docker"
	"github.com/polos-run/polos/sandbox/e2b"
	"github.com/polos-run/polos/sandbox/local"
	"github.com/polos-run/polos/tracing"
)

// Roles a polosd process can take.
const (
	RoleAll      = "all"      // NATS (embedded unless --nats-url), executors, sandbox host, HTTP
	RoleServer   = "server"   // NATS (embedded unless --nats-url) and HTTP only
	RoleExecutor = "executor" // executors only, against --nats-url
	RoleSandbox  = "sandbox"  // a sandbox host only, against --nats-url
)

// Roles lists the valid roles.
var Roles = []string{RoleAll, RoleServer, RoleExecutor, RoleSandbox}

// Defaults.
const (
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultIndexRepairTimeout bounds the run-index check (and rebuild)
	// at start.
	DefaultIndexRepairTimeout = 2 * time.Minute
	// DefaultLossCheckTimeout bounds reading the run streams' states at
	// start (LogStreamLosses).
	DefaultLossCheckTimeout = 10 * time.Second
	httpReadHeaderTimeout   = 10 * time.Second
	// DefaultTraceFlushTimeout bounds exporting the last spans at shutdown.
	DefaultTraceFlushTimeout = 5 * time.Second
)

// Error codes.
const (
	CodeUsage   perr.Code = "USAGE"
	CodeStartup perr.Code = "STARTUP"
)

// Options configure a daemon. Zero values take the config file's server
// section, then the defaults.
type Options struct {
	Config    *config.Config
	Role      string
	Namespace string
	// NATSURL, when set, uses that server or cluster (comma-separated URLs)
	// instead of starting the embedded one.
	NATSURL     string
	NATSOptions []nats.Option // credentials etc. for NATSURL
	DataDir     string
	Listen      string
	HTTP        string // "" or "off": no HTTP API. Roles executor and sandbox serve only /healthz and /readyz there, and only when it is given (not from the default)
	Executors   int
	APIKey      string
	// Replicas of every asset (--replicas, else server.replicas); 0: none
	// configured, so new assets get protocol.DefaultReplicas and existing
	// ones keep theirs.
	Replicas  int
	ReadyFile string // written (JSON Ready) once everything serves
	NoSync    bool   // benchmarks only: no fsync per write
	// SandboxLocalConfinement overrides server.sandbox_local_confinement
	// (local.ConfinementRequired or local.ConfinementNone).
	SandboxLocalConfinement string
	// ShutdownTimeout bounds how long in-flight steps get to finish on
	// SIGTERM; past it their tasks are handed back (redelivered).
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	Out             io.Writer // startup lines; default os.Stdout
	// Mount lets other packages add HTTP handlers (e.g. the approval UI).
	Mount     func(m Mounter, deps Deps)
	httpGiven bool // HTTP was passed, not defaulted (Resolve)
}

// Mounter is what Options.Mount receives.
type Mounter interface {
	Mount(pattern string, h http.Handler)
}

// Ready is the content of the ready file.
type Ready struct {
	PID     int    `json:"pid"`
	Role    string `json:"role"`
	NATSURL string `json:"nats_url"`
	HTTPURL string `json:"http_url,omitempty"`
	// HTTPKeyFile holds the HTTP API key polosd generated ("" when one
	// was given with --api-key).
	HTTPKeyFile string `json:"http_key_file,omitempty"`
	// CredsDir holds the identities of the embedded server (package creds).
	CredsDir  string   `json:"creds_dir,omitempty"`
	DataDir   string   `json:"data_dir,omitempty"`
	Namespace string   `json:"namespace"`
	Executors int      `json:"executors"`
	Providers []string `json:"sandbox_providers,omitempty"`
	Workflows []string `json:"workflows,omitempty"`
}

// Resolve fills o from the config file and defaults, and checks it.
//
// (httpGiven records whether HTTP came from the caller: executor and
// sandbox roles serve health endpoints only then, so that one started
// next to a polosd does not take its default port.)
func (o *Options) Resolve() error {
	if o.Config == nil {
		o.Config = config.Default()
	}
	c := o.Config
	pick := func(dst *string, vals ...string) {
		for _, v := range vals {
			if *dst == "" {
				*dst = v
			}
		}
	}
	pick(&o.Role, RoleAll)
	pick(&o.Namespace, c.Namespace, config.DefaultNamespace)
	pick(&o.NATSURL, c.Server.NATSURL)
	pick(&o.DataDir, c.Server.DataDir, config.DefaultDataDir)
	pick(&o.Listen, c.Server.Listen, config.DefaultListen)
	o.httpGiven = o.HTTP != "" && o.HTTP != "off"
	pick(&o.HTTP, c.Server.HTTP, config.DefaultHTTP)
	pick(&o.SandboxLocalConfinement, c.Server.SandboxLocalConfinement)
	c.Server.SandboxLocalConfinement = o.SandboxLocalConfinement // what SandboxProviders reads
	if o.Executors == 0 {
		o.Executors = c.Server.Executors
	}
	if o.Executors <= 0 {
		o.Executors = config.DefaultExecutors
	}
	if o.Replicas <= 0 {
		o.Replicas = c.Server.Replicas // 0 still: none configured, existing assets keep their count
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	o.DataDir = config.ExpandHome(o.DataDir)
	valid := false
	for _, r := range Roles {
		valid = valid || r == o.Role
	}
	if !valid {
		return perr.New(CodeUsage, "use --role "+strings.Join(Roles, "|"), "unknown role %q", o.Role)
	}
	if (o.Role == RoleExecutor || o.Role == RoleSandbox) && o.NATSURL == "" {
		// Join the local single-node server by default.
		o.NATSURL = "nats://" + o.Listen
	}
	if o.HTTP == "off" {
		o.HTTP = ""
	}
	return nil
}

// Daemon is a running polosd.
type Daemon struct {
	control       *control.Service
	approvalsStop context.CancelFunc
	o             Options
	srv           *embed.Server
	nc            *nats.Conn
	js            jetstream.JetStream
	host          *dispatch.Host
	http          *http.Server
	ready         Ready
	execs         []*executor.Executor
	execStop      context.CancelFunc
	execWG        sync.WaitGroup
	bgStop        context.CancelFunc // the reaper, the waker and the tracer
	bgWG          sync.WaitGroup
	traces        *tracing.Exporter // nil unless OTEL_EXPORTER_OTLP_* asks for traces
	metrics       *metrics.Metrics  // nil without HTTP
}

// Start brings every component of the role up and writes the ready file.
// On error, whatever was started is stopped again.
func Start(ctx context.Context, o Options) (_ *Daemon, err error) {
	if err := o.Resolve(); err != nil {
		return nil, err
	}
	d := &Daemon{o: o, ready: Ready{PID: os.Getpid(), Role: o.Role, Namespace: o.Namespace}}
	defer func() {
		if err != nil {
			d.Stop()
		}
	}()
	log := o.Logger
	if err := d.connect(); err != nil {
		return nil, err
	}
	if o.Role == RoleAll || o.Role == RoleServer {
		pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		var changes []string
		err := protocol.ProvisionWith(pctx, d.js, o.Namespace, protocol.ProvisionOptions{Replicas: o.Replicas,
			OnChange: func(asset, change string) { changes = append(changes, asset+": "+change) }})
		cancel()
		if len(changes) > 0 {
			// One line for the whole repair (a replica change touches
			// every asset), logged also when a later asset failed.
			log.Warn("provisioning changed assets to match the configuration", "assets", len(changes), "changes", strings.Join(changes, "; "))
		}
		if err != nil {
			return nil, err
		}
		// Messages nats-server lost recovering the run streams are logged
		// before anything reads the histories (and before an index repair
		// could rewrite what the index recorded of them).
		lctx, cancel := context.WithTimeout(ctx, DefaultLossCheckTimeout)
		LogStreamLosses(lctx, d.js, log)
		cancel()
		// The run index is derived: a damaged or lost one is rebuilt from
		// the histories before anyone lists runs.
		rctx, cancel := context.WithTimeout(ctx, DefaultIndexRepairTimeout)
		_, err = index.RepairAtStart(rctx, d.js, o.Namespace, log)
		cancel()
		if err != nil {
			log.Warn("run index check failed; `polos index rebuild` repairs it", "err", err)
		}
	}
	deps, err := NewDeps(d.nc, d.js, o.Namespace, filepath.Join(o.DataDir, "workspaces"), log)
	if err != nil {
		return nil, err
	}
	// A sandbox host runs no workflow code and may touch nothing but the
	// sandbox subjects (protocol.RoleSandbox).
	var reg *polos.Registry
	var metas []protocol.WorkflowMeta
	if o.Role != RoleSandbox {
		if reg, metas, err = Registry(o.Config, deps); err != nil {
			return nil, err
		}
		d.ready.Workflows = reg.Names()
	}

	if o.Role == RoleAll || o.Role == RoleSandbox {
		providers, err := SandboxProviders(o.Config, log)
		if err != nil {
			return nil, err
		}
		hostOpts, err := SandboxHostOptions(o.Config, o.Namespace, o.DataDir)
		if err != nil {
			return nil, err
		}
		d.host, err = dispatch.NewHost(d.nc, hostOpts, providers...)
		if err != nil {
			return nil, err
		}
		for _, p := range providers {
			d.ready.Providers = append(d.ready.Providers, p.Name())
		}
		fmt.Fprintf(o.Out, "polosd: sandbox host serving %s\n", strings.Join(d.ready.Providers, ", "))
	}
	if o.Role == RoleAll || o.Role == RoleExecutor {
		ectx, cancel := context.WithCancel(context.Background())
		d.execStop = cancel
		host, _ := os.Hostname()
		for i := 0; i < o.Executors; i++ {
			ex, err := executor.New(d.nc, d.js, reg, executor.Options{Namespace: o.Namespace, Logger: log,
				ID: fmt.Sprintf("exec-%s-%d-%d", host, os.Getpid(), i)})
			if err != nil {
				return nil, err
			}
			d.execs = append(d.execs, ex)
			d.execWG.Add(1)
			go func() {
				defer d.execWG.Done()
				if err := ex.Run(ectx); err != nil {
					log.Error("executor stopped", "err", err)
				}
			}()
		}
		actx, cancel2 := context.WithTimeout(ctx, 10*time.Second)
		err := protocol.Advertise(actx, d.js, o.Namespace, metas)
		cancel2()
		if err != nil {
			return nil, err
		}
		d.ready.Executors = o.Executors
		fmt.Fprintf(o.Out, "polosd: %d executors (namespace %s, workflows: %s)\n", o.Executors, o.Namespace, strings.Join(d.ready.Workflows, ", "))
	}
	if o.Role == RoleAll || o.Role == RoleServer {
		if err := d.startWatchers(); err != nil {
			return nil, err
		}
		if err := d.startControl(deps); err != nil {
			return nil, err
		}
		if o.HTTP != "" {
			if err := d.startHTTP(reg, deps); err != nil {
				return nil, err
			}
		}
	}
	if (o.Role == RoleExecutor || o.Role == RoleSandbox) && o.httpGiven && o.HTTP != "" {
		if err := d.startHealthHTTP(); err != nil {
			return nil, err
		}
	}
	if d.srv != nil {
		if err := creds.WriteEndpoint(o.DataDir, creds.Endpoint{PID: os.Getpid(), NATSURL: d.ready.NATSURL, HTTPURL: d.ready.HTTPURL, Namespaces: d.srv.Namespaces()}); err != nil {
			return nil, err
		}
	}
	if o.ReadyFile != "" {
		if err := writeReady(o.ReadyFile, d.ready); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(o.Out, "polosd: ready (role %s, pid %d)\n", o.Role, os.Getpid())
	return d, nil
}

func (d *Daemon) connect() error {
	o := d.o
	var err error
	if o.NATSURL == "" {
		d.srv, err = embed.Start(embed.Options{DataDir: o.DataDir, Listen: o.Listen, NoSync: o.NoSync, Namespaces: []string{o.Namespace}, Logger: o.Logger})
		if err != nil {
			return err
		}
		d.nc, err = d.srv.Connect()
		if err != nil {
			return err
		}
		d.ready.NATSURL, d.ready.DataDir, d.ready.CredsDir = d.srv.ClientURL(), o.DataDir, d.srv.Creds().Dir()
		sync := "fsync on every write"
		if o.NoSync {
			sync = "NO fsync (benchmark mode)"
		}
		fmt.Fprintf(d.o.Out, "polosd: nats %s (embedded nats-server %s, data dir %s, %s)\n", d.ready.NATSURL, embed.Version(), o.DataDir, sync)
	} else {
		credOpts, who, err := d.externalCreds()
		if err != nil {
			return err
		}
		opts := append(append([]nats.Option{nats.Name("polosd-" + o.Role), nats.Timeout(client.DefaultConnectTimeout)}, protocol.ServiceConnOptions()...), credOpts...)
		d.nc, err = nats.Connect(o.NATSURL, opts...)
		if err != nil {
			return perr.Wrap(err, client.CodeUnreachable, "start the NATS server (or `polosd --role server`) first, or fix --nats-url and the credentials options",
				"cannot reach NATS at %s as %s", o.NATSURL, who)
		}
		d.ready.NATSURL = o.NATSURL
		fmt.Fprintf(d.o.Out, "polosd: nats %s (external)\n", o.NATSURL)
	}
	d.js, err = jetstream.New(d.nc)
	if err != nil {
		return perr.Wrap(err, client.CodeUnreachable, "enable JetStream on the NATS server", "JetStream unavailable")
	}
	return nil
}

// clientOptions are the options of the clients polosd serves requests
// with: with the embedded server, a write that gets no answer is named by
// its store watchdog (STORE_FULL, ...) and refused at once.
func (d *Daemon) clientOptions() []client.Option {
	if d.srv == nil {
		return nil
	}
	return []client.Option{client.StoreDiagnosis(d.srv.StoreFault)}
}

func (d *Daemon) startHTTP(reg httpapi.Workflows, deps Deps) error {
	cl, err := client.New(d.nc, d.o.Namespace, d.clientOptions()...)
	if err != nil {
		return err
	}
	key := d.o.APIKey
	if key == "" {
		st, err := creds.Open(filepath.Join(d.o.DataDir, creds.DirName))
		if err != nil {
			return err
		}
		if key, err = st.HTTPKey(); err != nil {
			return err
		}
		d.ready.HTTPKeyFile = st.HTTPKeyPath()
	}
	api := httpapi.New(httpapi.Options{Client: cl, Workflows: reg, APIKey: key, Logger: d.o.Logger, Health: d.checks(), Role: d.o.Role})
	if d.o.Mount != nil {
		d.o.Mount(api, deps)
	}
	if d.metrics != nil {
		api.MountAuth("GET /metrics", d.metrics.Handler())
	}
	mountPprof(api)
	if err := d.serveHTTP(api); err != nil {
		return err
	}
	actx, cancel := context.WithCancel(context.Background())
	d.approvalsStop = cancel
	if err := d.startApprovals(actx, func(pattern string, h any) { api.Mount(pattern, h.(http.Handler)) }, d.ready.HTTPURL); err != nil {
		return err
	}
	auth := "API key required: --api-key"
	if d.ready.HTTPKeyFile != "" {
		auth = "API key required: " + d.ready.HTTPKeyFile
	}
	fmt.Fprintf(d.o.Out, "polosd: http %s (%s)\n", d.ready.HTTPURL, auth)
	return nil
}

// mountPprof serves the Go profiler under /debug/pprof/, behind the API key.
func mountPprof(api *httpapi.Server) {
	api.MountAuth("/debug/pprof/", http.HandlerFunc(pprof.Index))
	api.MountAuth("/debug/pprof/cmdline", http.HandlerFunc(pprof.Cmdline))
	api.MountAuth("/debug/pprof/profile", http.HandlerFunc(pprof.Profile))
	api.MountAuth("/debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
	api.MountAuth("/debug/pprof/trace", http.HandlerFunc(pprof.Trace))
}

// serveHTTP listens on --http and serves h until Stop.
func (d *Daemon) serveHTTP(h http.Handler) error {
	ln, err := net.Listen("tcp", d.o.HTTP)
	if err != nil {
		return perr.Wrap(err, CodeStartup, "pick another --http address (port 0 picks a free one), or --http off", "cannot listen for HTTP on %s", d.o.HTTP)
	}
	d.http = &http.Server{Handler: h, ReadHeaderTimeout: httpReadHeaderTimeout}
	go func() {
		if err := d.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.o.Logger.Error("http server stopped", "err", err)
		}
	}()
	d.ready.HTTPURL = "http://" + ln.Addr().String()
	return nil
}

// startHealthHTTP serves only /healthz and /readyz (roles executor and
// sandbox).
func (d *Daemon) startHealthHTTP() error {
	if err := d.serveHTTP(health.Handler(d.o.Role, d.checks())); err != nil {
		return err
	}
	fmt.Fprintf(d.o.Out, "polosd: http %s (health only: /healthz, /readyz)\n", d.ready.HTTPURL)
	return nil
}

// checks are the readiness checks of this process's role: the NATS
// connection; JetStream answering (not for a sandbox host, which may not
// use it); the embedded store's health; each executor pulling with its
// lease renewals landing.
func (d *Daemon) checks() []health.Check {
	checks := []health.Check{{Name: "nats", Run: func(context.Context) error {
		if !d.nc.IsConnected() {
			return perr.New(protocol.CodeStoreIO, "check the NATS server (--nats-url) and the network; polosd reconnects by itself", "not connected to NATS (%s)", d.nc.Status())
		}
		return nil
	}}}
	if d.o.Role != RoleSandbox {
		checks = append(checks, health.Check{Name: "jetstream", Run: func(ctx context.Context) error {
			if _, err := d.js.AccountInfo(ctx); err != nil {
				return protocol.StoreError(perr.Wrap(err, protocol.CodeStoreIO, protocol.FixStoreUnavailable, "JetStream did not answer"), "JetStream did not answer")
			}
			return nil
		}})
	}
	if d.srv != nil {
		checks = append(checks, health.Check{Name: "store", Run: func(context.Context) error { return d.srv.StoreFault() }})
	}
	for _, ex := range d.execs {
		checks = append(checks, health.Check{Name: "executor " + ex.ID(), Run: func(context.Context) error { return ex.Ready() }})
	}
	return checks
}

// externalCreds are the credentials for an external server: the options
// given (--nats-creds, ...), or else the identity of this role that a
// polosd on the same data directory issued (so `polosd --role executor`
// joins the local `polosd` with no flags). who names them for errors.
func (d *Daemon) externalCreds() ([]nats.Option, string, error) {
	o := d.o
	if len(o.NATSOptions) > 0 {
		return o.NATSOptions, "the given credentials", nil
	}
	role := protocol.RoleServer
	switch o.Role {
	case RoleExecutor:
		role = protocol.RoleExecutor
	case RoleSandbox:
		role = protocol.RoleSandbox
	}
	path := filepath.Join(o.DataDir, creds.DirName, o.Namespace, string(role)+creds.SeedExt)
	if _, err := os.Stat(path); err != nil {
		return nil, "no credentials", nil
	}
	f, err := creds.Load(path)
	if err != nil {
		return nil, "", err
	}
	return f.NATSOptions(), f.Identity.String() + " (" + path + ")", nil
}

// startControl serves operators' requests (the CLI's start, resume,
// cancel, ...) with the daemon's own identity.
func (d *Daemon) startControl(deps Deps) error {
	cl, err := client.New(d.nc, d.o.Namespace, d.clientOptions()...)
	if err != nil {
		return err
	}
	grants, err := hitl.NewGrants(context.Background(), d.js, d.o.Namespace)
	if err != nil {
		return err
	}
	d.control, err = control.Serve(control.Options{Client: cl, Grants: grants, Budget: ratelimit.NewBudget(d.js, d.o.Namespace), Logger: d.o.Logger})
	return err
}

// Ready describes what the daemon serves.
func (d *Daemon) Ready() Ready { return d.ready }

// startWatchers starts the server role's background services: the reaper
// (runs of dead executors go to live ones at once) and the waker (every
// recorded signal queues its run).
func (d *Daemon) startWatchers() error {
	st, err := events.NewStore(d.nc, d.js, d.o.Namespace, "polosd-waker")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.bgStop = cancel
	reaper := executor.NewReaper(d.nc, d.js, d.o.Namespace, d.o.Logger)
	waker := executor.NewWaker(st, d.o.Logger)
	watchers := map[string]func(context.Context) error{"reaper": reaper.Run, "waker": waker.Run}
	// Telemetry: spans and metrics derived from the histories by one
	// follower (docs/observability.md).
	var sinks tracing.Tee
	if tracing.Enabled() {
		if d.traces, err = tracing.NewOTLPExporter(ctx); err != nil {
			return err
		}
		sinks = append(sinks, d.traces)
		d.o.Logger.Info("tracing: exporting spans derived from run histories over OTLP")
	}
	if d.o.HTTP != "" {
		d.metrics = metrics.New(metrics.Options{JS: d.js, Reader: st.Reader(), Namespace: d.o.Namespace, Logger: d.o.Logger})
		sinks = append(sinks, d.metrics)
	}
	if len(sinks) > 0 {
		watchers["telemetry"] = tracing.NewFollower(st.WithWriter("polosd-telemetry"), sinks, d.o.Logger).Run
	}
	for name, run := range watchers {
		d.bgWG.Add(1)
		go func() {
			defer d.bgWG.Done()
			if err := run(ctx); err != nil {
				d.o.Logger.Error(name+" stopped", "err", err)
			}
		}()
	}
	return nil
}

// Stop shuts down in order: executors stop pulling, finish the step each
// run is executing and hand the runs back to other executors at once (up
// to ShutdownTimeout; tasks of steps still running then are redelivered
// after the ack wait), the sandbox host stops, HTTP
// drains, the NATS connection flushes, the embedded server shuts down
// (flushing its store) and releases the data directory. Safe on a partly
// started daemon.
func (d *Daemon) Stop() {
	log := d.o.Logger
	if d.approvalsStop != nil {
		d.approvalsStop()
	}
	if d.execStop != nil {
		d.execStop()
		done := make(chan struct{})
		go func() { d.execWG.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(d.o.ShutdownTimeout):
			log.Warn("in-flight steps did not finish in time; their tasks will be redelivered", "timeout", d.o.ShutdownTimeout)
		}
	}
	if d.bgStop != nil {
		d.bgStop()
		d.bgWG.Wait()
		if d.traces != nil {
			sctx, cancel := context.WithTimeout(context.Background(), DefaultTraceFlushTimeout)
			if err := d.traces.Shutdown(sctx); err != nil {
				log.Warn("tracing: spans not flushed at shutdown", "err", err)
			}
			cancel()
		}
	}
	if d.host != nil {
		_ = d.host.Close()
	}
	if d.control != nil {
		d.control.Close()
	}
	if d.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = d.http.Shutdown(ctx)
		cancel()
	}
	if d.nc != nil {
		_ = d.nc.FlushTimeout(5 * time.Second)
		d.nc.Close()
	}
	if d.srv != nil {
		creds.RemoveEndpoint(d.o.DataDir)
		d.srv.Shutdown()
	}
	if d.o.ReadyFile != "" {
		_ = os.Remove(d.o.ReadyFile)
	}
}

// Run starts the daemon, serves until ctx is done, and stops it.
func Run(ctx context.Context, o Options) error {
	d, err := Start(ctx, o)
	if err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(d.o.Out, "polosd: shutting down")
	d.Stop()
	fmt.Fprintln(d.o.Out, "polosd: stopped")
	return nil
}

// SandboxProviders are the providers this machine's sandbox host serves:
// local always; docker when the Docker Engine answers; e2b when
// E2B_API_KEY is set. It fails (polosd does not start) when the local
// sandbox cannot confine exec here and server.sandbox_local_confinement is
// not "none"; the error names what is missing.
func SandboxProviders(cfg *config.Config, log *slog.Logger) ([]sandbox.Provider, error) {
	lp := local.NewWithOptions(local.Options{Confinement: cfg.Server.SandboxLocalConfinement})
	if err := lp.Check(context.Background()); err != nil {
		return nil, err
	}
	lp.LogStart(log)
	out := []sandbox.Provider{lp}
	if p, err := docker.New(docker.Options{}); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err = p.Ping(ctx)
		cancel()
		if err == nil {
			out = append(out, p)
		} else {
			log.Info("docker sandboxes unavailable", "err", err)
		}
	}
	if ec := e2b.ConfigFromEnv(); ec.APIKey != "" {
		out = append(out, e2b.NewProvider(ec))
	}
	return out, nil
}

func writeReady(path string, r Ready) error {
	b, _ := json.MarshalIndent(r, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return perr.Wrap(err, CodeStartup, "choose a writable --ready-file path", "cannot write ready file %s", path)
	}
	if err := os.Rename(tmp, path); err != nil {
		return perr.Wrap(err, CodeStartup, "choose a writable --ready-file path", "cannot write ready file %s", path)
	}
	return nil
}
