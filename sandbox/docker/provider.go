// Package docker is the docker sandbox provider: one hardened container per
// run or session, driven through the Docker Engine API (never the docker
// CLI). File tools and exec act inside the container (ADR 0120); see
// containerConfig for the hardening and Provider.Sweep / Provider.ReapIdle
// for cleanup.
package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// Options configure a Provider; the zero value is usable.
type Options struct {
	// Client talks to the engine; nil means client.FromEnv with API version
	// negotiation (the engine here speaks API 1.41).
	Client client.APIClient
	// HostID goes into LabelHost; Sweep and ReapIdle only consider
	// containers with this host id. Default: os.Hostname().
	HostID string
	// User is the numeric non-root "uid:gid" commands run as. Default DefaultUser.
	User string
	// DefaultImage is used when Spec.Image is empty. Default DefaultImage.
	DefaultImage string
	// Now is the clock for idle accounting. Default time.Now.
	Now func() time.Time
	// AllowPathsOutsideWorkspace lets the file tools and exec's cwd reach
	// any path inside the container (the container is then the only
	// confinement, as for exec's commands). Default false: paths and their
	// symlinks must stay under WorkspacePath (CodeOutsideWorkspace), the
	// same rule as every other provider (sandboxtest).
	AllowPathsOutsideWorkspace bool
}

// Provider creates, opens and destroys docker sandboxes.
type Provider struct {
	cli       client.APIClient
	ownClient bool
	hostID    string
	user      string
	image     string
	now       func() time.Time
	act       *activity
	anyPath   bool
}

// New returns a provider. It does not contact the engine; Ping does.
func New(opts Options) (*Provider, error) {
	p := &Provider{cli: opts.Client, hostID: opts.HostID, user: opts.User, image: opts.DefaultImage, now: opts.Now,
		anyPath: opts.AllowPathsOutsideWorkspace}
	if p.cli == nil {
		cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, perr.Wrap(err, sandbox.CodeProvider, "check DOCKER_HOST and related variables", "cannot configure the Docker client")
		}
		p.cli, p.ownClient = cli, true
	}
	if p.hostID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "unknown-host"
		}
		p.hostID = h
	}
	if p.user == "" {
		p.user = DefaultUser
	}
	if _, _, err := parseUser(p.user); err != nil {
		return nil, err
	}
	if p.image == "" {
		p.image = DefaultImage
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.act = newActivity(p.now)
	return p, nil
}

// Name is sandbox.ProviderDocker.
func (p *Provider) Name() string { return sandbox.ProviderDocker }

// HostID is the value of LabelHost on this provider's containers.
func (p *Provider) HostID() string { return p.hostID }

// Client is the engine client (for tests and tools).
func (p *Provider) Client() client.APIClient { return p.cli }

// Close releases the client if New created it.
func (p *Provider) Close() error {
	if p.ownClient {
		return p.cli.Close()
	}
	return nil
}

// Ping checks that the engine answers.
func (p *Provider) Ping(ctx context.Context) error {
	if _, err := p.cli.Ping(ctx); err != nil {
		return perr.Wrap(err, sandbox.CodeUnavailable, "start the Docker engine or set DOCKER_HOST", "the Docker engine does not answer")
	}
	return nil
}

var _ sandbox.Provider = (*Provider)(nil)

// Create creates and starts a sandbox for spec (see CreateBackend) with the
// six tools of sandbox.New.
func (p *Provider) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	b, err := p.CreateBackend(ctx, spec)
	if err != nil {
		return nil, err
	}
	return sandbox.New(b), nil
}

// Open reattaches to the sandbox of info (see OpenBackend); spec is not
// needed: everything lives in the container.
func (p *Provider) Open(ctx context.Context, info sandbox.Info, _ sandbox.Spec) (sandbox.Sandbox, error) {
	b, err := p.OpenBackend(ctx, info)
	if err != nil {
		return nil, err
	}
	return sandbox.New(b), nil
}

// CreateBackend creates and starts the container for spec. On any failure
// after the container was created, it is removed again.
func (p *Provider) CreateBackend(ctx context.Context, spec sandbox.Spec) (*Backend, error) {
	s, err := resolveSpec(spec, p.user, p.image)
	if err != nil {
		return nil, err
	}
	if s.workspaceDir != "" {
		if err := checkWorkspaceDir(s.workspaceDir, s.uid, s.gid); err != nil {
			return nil, err
		}
	}
	cfg, hc := containerConfig(s, p.hostID)
	created, err := p.cli.ContainerCreate(ctx, cfg, hc, nil, nil, containerName(s.owner))
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil, perr.Wrap(err, sandbox.CodeBadRequest,
				"build it (make images) or load it into the engine; no registry pull is attempted",
				"docker image %s is not in the engine", s.image)
		}
		return nil, perr.Wrap(err, sandbox.CodeProvider, "check the Docker engine log", "cannot create a container from %s", s.image)
	}
	if err := p.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		_ = p.remove(context.WithoutCancel(ctx), created.ID)
		return nil, perr.Wrap(err, sandbox.CodeProvider, "check the Docker engine log", "cannot start container %s from %s", created.ID, s.image)
	}
	p.act.touch(created.ID)
	return p.backend(sandbox.Info{Provider: sandbox.ProviderDocker, ID: created.ID, Image: s.image, Workspace: WorkspacePath}), nil
}

// OpenBackend reattaches to the container of info, starting it again if it
// stopped (a bind-mounted workspace survives; a tmpfs one does not). It
// returns CodeSandboxLost when the container is gone or will not start, and
// CodeBadRequest for a container this provider did not create.
func (p *Provider) OpenBackend(ctx context.Context, info sandbox.Info) (*Backend, error) {
	ins, err := p.inspectManaged(ctx, info.ID)
	if err != nil {
		return nil, err
	}
	if ins.State == nil || !ins.State.Running {
		if err := p.cli.ContainerStart(ctx, ins.ID, container.StartOptions{}); err != nil {
			return nil, perr.Wrap(err, sandbox.CodeSandboxLost, "create a new sandbox", "docker sandbox %s is stopped and does not start again", info.ID)
		}
	}
	p.act.touch(ins.ID)
	img := info.Image
	if img == "" && ins.Config != nil {
		img = ins.Config.Image
	}
	return p.backend(sandbox.Info{Provider: sandbox.ProviderDocker, ID: ins.ID, Image: img, Workspace: WorkspacePath}), nil
}

// Destroy removes the container and its anonymous volumes. It is idempotent:
// a container that is already gone is not an error.
func (p *Provider) Destroy(ctx context.Context, info sandbox.Info) error {
	if _, err := p.inspectManaged(ctx, info.ID); err != nil {
		if perr.Has(err, sandbox.CodeSandboxLost) {
			return nil
		}
		return err
	}
	return p.remove(ctx, info.ID)
}

func (p *Provider) backend(info sandbox.Info) *Backend {
	return &Backend{cli: p.cli, info: info, act: p.act, unconfined: p.anyPath}
}

// inspectManaged inspects a container and refuses containers without our
// managed label, so an Info naming some other container cannot be used to
// drive or remove it.
func (p *Provider) inspectManaged(ctx context.Context, id string) (container.InspectResponse, error) {
	if id == "" {
		return container.InspectResponse{}, perr.New(sandbox.CodeBadRequest, "pass the Info returned by Create", "docker sandbox info has no container id")
	}
	ins, err := p.cli.ContainerInspect(ctx, id)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return ins, perr.Wrap(err, sandbox.CodeSandboxLost, "create a new sandbox", "docker sandbox %s no longer exists", id)
		}
		return ins, perr.Wrap(err, sandbox.CodeProvider, "check the Docker engine", "cannot inspect container %s", id)
	}
	if ins.Config == nil || ins.Config.Labels[LabelManaged] != "true" {
		return ins, perr.New(sandbox.CodeBadRequest, "pass the Info of a Polos sandbox", "container %s is not managed by polos", id)
	}
	return ins, nil
}

// remove force-removes a container with its anonymous volumes; a container
// already gone, or being removed, counts as removed.
func (p *Provider) remove(ctx context.Context, id string) error {
	err := p.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	p.act.forget(id)
	if err == nil || cerrdefs.IsNotFound(err) || cerrdefs.IsConflict(err) {
		return nil
	}
	return perr.Wrap(err, sandbox.CodeProvider, "check the Docker engine log", "cannot remove container %s", id)
}

// managed lists this host's managed containers, running or not.
func (p *Provider) managed(ctx context.Context) ([]container.Summary, error) {
	list, err := p.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"),
		filters.Arg("label", LabelHost+"="+p.hostID),
	)})
	if err != nil {
		return nil, perr.Wrap(err, sandbox.CodeProvider, "check the Docker engine", "cannot list managed containers")
	}
	return list, nil
}

// Sweep removes this host's managed containers whose owner is gone, e.g.
// after a crash of the sandbox host; isOwnerAlive is asked once per
// container. It returns the ids removed. It goes on after a failed removal
// and returns the first error with the others removed.
func (p *Provider) Sweep(ctx context.Context, isOwnerAlive func(owner string) bool) ([]string, error) {
	list, err := p.managed(ctx)
	if err != nil {
		return nil, err
	}
	var removed []string
	var first error
	for _, c := range list {
		if isOwnerAlive(c.Labels[LabelOwner]) {
			continue
		}
		if err := p.remove(ctx, c.ID); err != nil {
			first = cmpErr(first, err)
			continue
		}
		removed = append(removed, c.ID)
	}
	return removed, first
}

// ReapIdle removes this host's managed containers unused for idleFor or
// longer. It never removes one with an operation in flight, nor one whose
// owner isWaiting (e.g. a run suspended for approval: its sandbox must be
// there when the person answers). Last use is known for sandboxes this
// provider served; for others it is the container's creation time. It
// returns the ids removed.
func (p *Provider) ReapIdle(ctx context.Context, idleFor time.Duration, isWaiting func(owner string) bool) ([]string, error) {
	list, err := p.managed(ctx)
	if err != nil {
		return nil, err
	}
	now := p.now()
	var removed []string
	var first error
	for _, c := range list {
		last, ok, busy := p.act.idleSince(c.ID)
		if busy {
			continue
		}
		if !ok {
			last = time.Unix(c.Created, 0)
		}
		if now.Sub(last) < idleFor || isWaiting(c.Labels[LabelOwner]) {
			continue
		}
		if err := p.remove(ctx, c.ID); err != nil {
			first = cmpErr(first, err)
			continue
		}
		removed = append(removed, c.ID)
	}
	return removed, first
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// checkWorkspaceDir makes sure the host directory exists and that uid:gid
// may write it by its mode bits: a bind mount keeps host ownership, and a
// workspace the sandbox user cannot write fails every tool later, less
// clearly.
func checkWorkspaceDir(dir string, uid, gid int) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return perr.New(sandbox.CodeBadRequest, "create the directory first", "workspace_dir %s does not exist", dir)
	}
	if err != nil {
		return perr.Wrap(err, sandbox.CodeBadRequest, "", "cannot stat workspace_dir %s", dir)
	}
	if !fi.IsDir() {
		return perr.New(sandbox.CodeBadRequest, "give a directory", "workspace_dir %s is not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if !writableBy(fi.Mode(), int(st.Uid), int(st.Gid), uid, gid) {
		return perr.New(sandbox.CodeBadRequest, fmt.Sprintf("chown -R %d:%d %s (or make it group- or world-writable)", uid, gid, dir),
			"workspace_dir %s (owner %d:%d, mode %v) is not writable by the sandbox user %d:%d", dir, st.Uid, st.Gid, fi.Mode().Perm(), uid, gid)
	}
	return nil
}

// writableBy applies the owner/group/other write and search bits.
func writableBy(mode os.FileMode, ownerUID, ownerGID, uid, gid int) bool {
	perm := mode.Perm()
	switch {
	case ownerUID == uid:
		return perm&0o300 == 0o300
	case ownerGID == gid:
		return perm&0o030 == 0o030
	default:
		return perm&0o003 == 0o003
	}
}
