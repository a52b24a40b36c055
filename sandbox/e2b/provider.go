// Package e2b is the E2B sandbox provider: a net/http client of the E2B
// control plane (create, inspect, kill sandboxes) and of envd, the daemon
// inside each sandbox (processes over the Connect protocol, files over
// /files and filesystem.Filesystem). There is no official Go SDK; the wire
// facts are in /work/shared/e2b-protocol.md and package e2bfake serves them
// locally for tests.
//
// A sandbox.Info from Create is all another process needs to reach the same
// sandbox: Open fetches the envd access token and domain again with
// GET /sandboxes/{id}, so no secret is stored in the run's history.
package e2b

import (
	"context"
	"path"
	"time"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

// Metadata keys put on every sandbox, so an orphan sweep can find them by
// listing sandboxes (GET /v2/sandboxes?metadata=...).
const (
	MetadataOwner = "polos_owner"
	MetadataScope = "polos_scope"
)

// Provider creates, opens and destroys E2B sandboxes.
type Provider struct {
	cfg Config
	api *apiClient
}

// NewProvider returns a provider; a missing API key is reported by the
// first call (CodeProvider, saying to set E2B_API_KEY), so a daemon can
// build every provider at start-up whether or not E2B is used.
func NewProvider(cfg Config) *Provider {
	cfg = cfg.withDefaults()
	return &Provider{cfg: cfg, api: &apiClient{cfg: cfg}}
}

func (p *Provider) Name() string { return sandbox.ProviderE2B }

// Backend is one live E2B sandbox: the FS and Execer primitives that
// sandbox.New turns into the six tools.
type Backend struct {
	info sandbox.Info
	envd *envdConn
}

func (b *Backend) Info() sandbox.Info { return b.info }

var _ sandbox.Backend = (*Backend)(nil)

// Create starts a sandbox from spec.Template (default "base") living
// spec.TimeoutSec seconds (default 300) with spec.Env as its global
// environment, and makes sure the workspace directory exists. Spec.Network
// "none" turns internet access off; anything else leaves it on.
func (p *Provider) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	b, err := p.CreateBackend(ctx, spec)
	if err != nil {
		return nil, err
	}
	return sandbox.New(b), nil
}

// Open reattaches to the sandbox info names; CodeSandboxLost when it no
// longer exists. It does not change the sandbox's lifetime.
func (p *Provider) Open(ctx context.Context, info sandbox.Info, spec sandbox.Spec) (sandbox.Sandbox, error) {
	b, err := p.OpenBackend(ctx, info)
	if err != nil {
		return nil, err
	}
	return sandbox.New(b), nil
}

// Destroy kills the sandbox; one that is already gone is success.
func (p *Provider) Destroy(ctx context.Context, info sandbox.Info) error {
	if err := checkProvider(info); err != nil {
		return err
	}
	return p.api.kill(ctx, info.ID)
}

// SetTimeout makes the sandbox end d from now (rounded up to whole
// seconds); it can shorten the lifetime as well as extend it.
func (p *Provider) SetTimeout(ctx context.Context, info sandbox.Info, d time.Duration) error {
	if err := checkProvider(info); err != nil {
		return err
	}
	sec := int((d + time.Second - 1) / time.Second)
	if sec <= 0 {
		return perr.New(sandbox.CodeBadRequest, "give a positive duration", "e2b set timeout: expected a positive duration, got %v", d)
	}
	return p.api.setTimeout(ctx, info.ID, sec)
}

func checkProvider(info sandbox.Info) error {
	if info.Provider != "" && info.Provider != sandbox.ProviderE2B {
		return perr.New(sandbox.CodeBadRequest, "use the provider named in the sandbox info", "e2b: expected a sandbox of provider %q, got %q", sandbox.ProviderE2B, info.Provider)
	}
	return nil
}

// CreateBackend is Create without the tools layer.
func (p *Provider) CreateBackend(ctx context.Context, spec sandbox.Spec) (*Backend, error) {
	if !path.IsAbs(p.cfg.Workspace) {
		return nil, perr.New(sandbox.CodeBadRequest, "set Config.Workspace to an absolute path such as "+DefaultWorkspace, "e2b create: expected an absolute workspace path, got %q", p.cfg.Workspace)
	}
	timeout := spec.TimeoutSec
	if timeout == 0 {
		timeout = DefaultTimeoutSec
	}
	if timeout < 0 {
		return nil, perr.New(sandbox.CodeBadRequest, "give a lifetime in seconds, or 0 for the default", "e2b create: expected a sandbox timeout >= 0, got %d", timeout)
	}
	template := spec.Template
	if template == "" {
		template = DefaultTemplate
	}
	env := spec.Env
	if env == nil {
		env = map[string]string{}
	}
	scope := spec.Scope
	if scope == "" {
		scope = "run"
	}
	created, err := p.api.create(ctx, wire.NewSandbox{
		TemplateID:          template,
		Timeout:             timeout,
		Metadata:            map[string]string{MetadataOwner: spec.Owner, MetadataScope: scope},
		EnvVars:             env,
		Secure:              true,
		AllowInternetAccess: spec.Network != "none",
	})
	if err != nil {
		return nil, err
	}
	b := p.backend(created.SandboxID, template, deref(created.Domain), created.EnvdAccessToken, created.EnvdVersion, p.cfg.Workspace)
	// Make sure the workspace exists; on failure do not leak the sandbox.
	if err := b.envd.makeDir(ctx, b.info.Workspace); err != nil {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killTimeout)
		defer cancel()
		_ = p.api.kill(kctx, created.SandboxID)
		return nil, err
	}
	return b, nil
}

// OpenBackend is Open without the tools layer: GET /sandboxes/{id} gives
// the envd access token and domain; the workspace is info.Workspace.
func (p *Provider) OpenBackend(ctx context.Context, info sandbox.Info) (*Backend, error) {
	if err := checkProvider(info); err != nil {
		return nil, err
	}
	d, err := p.api.get(ctx, info.ID)
	if err != nil {
		return nil, err
	}
	ws := info.Workspace
	if ws == "" {
		ws = p.cfg.Workspace
	}
	if !path.IsAbs(ws) {
		return nil, perr.New(sandbox.CodeBadRequest, "pass the sandbox.Info returned by Create", "e2b open: expected an absolute workspace path, got %q", ws)
	}
	ws = path.Clean(ws)
	return p.backend(info.ID, info.Image, deref(d.Domain), d.EnvdAccessToken, d.EnvdVersion, ws), nil
}

func (p *Provider) backend(id, template, domain, token, envdVersion, workspace string) *Backend {
	return &Backend{
		info: sandbox.Info{Provider: sandbox.ProviderE2B, ID: id, Image: template, Workspace: workspace},
		envd: newEnvdConn(p.cfg, id, domain, token, envdVersion),
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
