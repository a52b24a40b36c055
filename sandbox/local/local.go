// Package local is the sandbox provider that runs tools directly on the host,
// confined to a workspace directory.
//
//   - Every file operation (read, write, edit, glob, grep) goes through
//     os.Root opened on the workspace: no escape by "..", by an absolute path
//     outside, or by a symlink in any component (leaf or parent), for reads
//     and writes alike. Such paths fail with CodeOutsideWorkspace.
//   - exec runs "/bin/sh -c COMMAND" confined (package confine, ADR 0111):
//     in its own user, PID, mount, IPC and UTS namespaces and, unless the
//     request has the network capability (ExecRequest.Network), an empty
//     network namespace; in a new root holding only the system directories
//     (read-only, /etc without its secrets), the workspace and a private
//     /tmp (read-write), a fresh /proc that shows only the command's own
//     processes; under a Landlock ruleset; with no capabilities. The
//     environment is scrubbed too (see Env): the daemon's secrets (API
//     keys, tokens) never reach it, neither through the environment nor
//     through /proc.
//   - The command's shell is PID 1 of its namespace: when it exits, or a
//     timeout, cancellation or Destroy kills it, the kernel kills every
//     process it started, background, setsid'd and double-forked children
//     included. exec returns when the shell exits.
//   - When the kernel lacks what confinement needs, the provider refuses to
//     create sandboxes and run commands (CodeConfinementUnavailable, naming
//     what is missing and how to fix it), unless it was built with
//     Options.Confinement = ConfinementNone: then exec runs unconfined as
//     the daemon's user in its own process group (a timeout kills the
//     group; children that leave it with setsid escape), and Info says
//     Confinement "none".
//
// Each sandbox's private /tmp is a directory under Options.TmpRoot that
// lives until Destroy. Destroy never deletes the workspace (it is the
// user's directory): it kills the commands exec started in that sandbox on
// this host and removes the private /tmp.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/local/confine"
)

// Defaults of the local provider.
const (
	// PipeDrainGrace is how long exec keeps reading output after the shell
	// exited, for a background child that still holds stdout or stderr.
	PipeDrainGrace = 250 * time.Millisecond
	// DefaultPATH is used when the daemon has no PATH.
	DefaultPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// DefaultLang is used when the daemon has no LANG.
	DefaultLang = "C.UTF-8"
	// Shell runs exec commands as Shell -c COMMAND.
	Shell = confine.Shell
)

// Confinement modes (Options.Confinement; the config key
// server.sandbox_local_confinement and polosd's --sandbox-local-confinement).
const (
	// ConfinementRequired (the default, also "") confines every exec and
	// refuses to run one when the kernel cannot.
	ConfinementRequired = "required"
	// ConfinementNone runs exec unconfined as the daemon's user: the
	// explicit unsafe mode, shown in logs and in Info.Confinement.
	ConfinementNone = sandbox.ConfinementNone
)

// InfoConfined is Info.Confinement of a confined local sandbox.
const InfoConfined = "namespaces+landlock"

// CodeConfinementUnavailable: the kernel lacks what exec confinement needs;
// the message names each missing feature and its fix.
const CodeConfinementUnavailable perr.Code = "SANDBOX_CONFINEMENT_UNAVAILABLE"

// Options configure a local provider; the zero value confines exec.
type Options struct {
	// Confinement is ConfinementRequired ("" too) or ConfinementNone.
	Confinement string
	// TmpRoot holds each sandbox's private /tmp, as TmpRoot/<sandbox ID>.
	// It is created with mode 0700 and must belong to the daemon's user
	// with no access for others. Default: DefaultTmpRoot().
	TmpRoot string
	// ReadOnlyPaths are more host directories commands may read (and run
	// programs from), beside confine.SystemDirs: e.g. /opt/node.
	ReadOnlyPaths []string
}

// DefaultTmpRoot is os.TempDir()/polos-sandbox-<uid>.
func DefaultTmpRoot() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("polos-sandbox-%d", os.Getuid()))
}

// Provider is the local sandbox provider. Its zero value is not usable; use New.
type Provider struct {
	opts Options

	checkOnce sync.Once
	checkErr  error

	mu     sync.Mutex
	groups map[string]map[int]bool         // unconfined: sandbox ID -> process groups exec started
	procs  map[string]map[*os.Process]bool // confined: sandbox ID -> running inits
}

// New returns a local provider that confines exec (Options{}).
func New() *Provider { return NewWithOptions(Options{}) }

// NewWithOptions returns a local provider configured by o. It does not
// check the kernel: Check does, and Create and Exec call it.
func NewWithOptions(o Options) *Provider {
	if o.TmpRoot == "" {
		o.TmpRoot = DefaultTmpRoot()
	}
	if o.Confinement == "" {
		o.Confinement = ConfinementRequired
	}
	return &Provider{opts: o, groups: map[string]map[int]bool{}, procs: map[string]map[*os.Process]bool{}}
}

func (p *Provider) Name() string { return sandbox.ProviderLocal }

// Confined reports whether exec is confined (Options.Confinement is not
// ConfinementNone).
func (p *Provider) Confined() bool { return p.opts.Confinement != ConfinementNone }

// Confinement is what Info.Confinement says of this provider's sandboxes.
func (p *Provider) Confinement() string {
	if p.Confined() {
		return InfoConfined
	}
	return ConfinementNone
}

// Check verifies, once, that this provider can do what it promises: for
// ConfinementRequired, that the kernel has every feature confinement needs
// (it builds a complete sandbox without running a command). The error is
// CodeConfinementUnavailable and names what is missing and how to fix it,
// or how to choose the unsafe mode instead. An unknown Options.Confinement
// is CodeBadRequest. The result is kept: the probe is bounded by
// confine.SetupTimeout, not by ctx, so one caller's cancelled context
// cannot fail the provider for good.
func (p *Provider) Check(ctx context.Context) error {
	p.checkOnce.Do(func() { p.checkErr = p.check(context.WithoutCancel(ctx)) })
	return p.checkErr
}

func (p *Provider) check(ctx context.Context) error {
	switch p.opts.Confinement {
	case ConfinementNone:
		return nil
	case ConfinementRequired:
	default:
		return perr.New(sandbox.CodeBadRequest, "set server.sandbox_local_confinement (polosd --sandbox-local-confinement) to "+ConfinementRequired+" or "+ConfinementNone,
			"unknown local sandbox confinement %q", p.opts.Confinement)
	}
	if err := p.ensureTmpRoot(); err != nil {
		return err
	}
	missing := confine.Missing()
	if len(missing) == 0 {
		ws, err := os.MkdirTemp(p.opts.TmpRoot, "probe-")
		if err != nil {
			return perr.Wrap(err, sandbox.CodeProvider, "check "+p.opts.TmpRoot, "cannot create the confinement probe's directory")
		}
		defer os.RemoveAll(ws)
		tmp := filepath.Join(ws, "tmp")
		if err := os.Mkdir(tmp, 0o700); err != nil {
			return perr.Wrap(err, sandbox.CodeProvider, "check "+p.opts.TmpRoot, "cannot create the confinement probe's directory")
		}
		pctx, cancel := context.WithTimeout(ctx, confine.SetupTimeout)
		defer cancel()
		if err := confine.Probe(pctx, ws, tmp); err != nil {
			missing = append(missing, "building a sandbox failed: "+err.Error()+
				" (inside a container, allow user namespaces and mounts, e.g. docker run --security-opt seccomp=unconfined --security-opt apparmor=unconfined)")
		}
	}
	if len(missing) > 0 {
		return perr.New(CodeConfinementUnavailable,
			"fix what is missing, or run commands unconfined (unsafe: they can read everything the daemon's user can) with server.sandbox_local_confinement: none in polos.yaml or polosd --sandbox-local-confinement=none",
			"the local sandbox cannot confine exec on this machine: %s", strings.Join(missing, "; "))
	}
	return nil
}

// ensureTmpRoot creates TmpRoot (0700) and refuses one another user could
// reach: it must be a real directory, owned by us, closed to others.
func (p *Provider) ensureTmpRoot() error {
	root := p.opts.TmpRoot
	if err := os.MkdirAll(root, 0o700); err != nil {
		return perr.Wrap(err, sandbox.CodeProvider, "choose another TmpRoot or fix its permissions", "cannot create the sandboxes' tmp root %s", root)
	}
	st, err := os.Lstat(root)
	if err != nil {
		return perr.Wrap(err, sandbox.CodeProvider, "check "+root, "cannot inspect the sandboxes' tmp root")
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || st.Mode().Perm()&0o077 != 0 || sys == nil || int(sys.Uid) != os.Getuid() {
		return perr.New(sandbox.CodeProvider, "remove "+root+" (another user may have planted it) or choose another TmpRoot",
			"the sandboxes' tmp root %s must be a directory owned by uid %d with mode 0700, found %s", root, os.Getuid(), st.Mode())
	}
	return nil
}

// tmpDir returns (creating it) the private /tmp of sandbox id.
func (p *Provider) tmpDir(id string) (string, error) {
	if err := p.ensureTmpRoot(); err != nil {
		return "", err
	}
	d := filepath.Join(p.opts.TmpRoot, id)
	if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", perr.Wrap(err, sandbox.CodeProvider, "check "+p.opts.TmpRoot, "cannot create the private /tmp of sandbox %s", id)
	}
	return d, nil
}

// ID is the sandbox ID of a workspace and owner: a hash of both, so creating
// the same sandbox twice gives the same ID.
func ID(workspace, owner string) string {
	h := sha256.Sum256([]byte(workspace + "\x00" + owner))
	return "local-" + hex.EncodeToString(h[:8])
}

// Create makes spec.WorkspaceDir (and its parents) if missing and returns the
// sandbox on it. Info.Workspace is the absolute path with symlinks resolved.
// It fails with CodeConfinementUnavailable when exec cannot be confined
// (see Check).
func (p *Provider) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	if err := p.Check(ctx); err != nil {
		return nil, err
	}
	if spec.WorkspaceDir == "" {
		return nil, perr.New(sandbox.CodeBadRequest, "set workspace_dir to the host directory the agent works in",
			"a local sandbox needs a workspace directory, got none")
	}
	if err := checkEnv(spec.Env); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(spec.WorkspaceDir)
	if err != nil {
		return nil, perr.Wrap(err, sandbox.CodeBadRequest, "give an absolute workspace_dir", "cannot resolve workspace directory %q", spec.WorkspaceDir)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, perr.Wrap(err, sandbox.CodeProvider, "check the directory's permissions or pick another workspace_dir",
			"cannot create workspace directory %s", abs)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, perr.Wrap(err, sandbox.CodeProvider, "check the workspace directory", "cannot resolve workspace directory %s", spec.WorkspaceDir)
	}
	if p.Confined() {
		if err := confine.CheckWorkspace(abs); err != nil {
			return nil, perr.Wrap(err, sandbox.CodeBadRequest, "pick a project directory as workspace_dir", "a confined local sandbox cannot use this workspace")
		}
	}
	info := sandbox.Info{Provider: sandbox.ProviderLocal, ID: ID(abs, spec.Owner), Workspace: abs, Confinement: p.Confinement()}
	return p.Open(ctx, info, spec)
}

// Open returns the sandbox for info; CodeSandboxLost when its workspace
// directory no longer exists. Info.Confinement is set to what this
// provider does now.
func (p *Provider) Open(_ context.Context, info sandbox.Info, spec sandbox.Spec) (sandbox.Sandbox, error) {
	if info.Provider != sandbox.ProviderLocal {
		return nil, perr.New(sandbox.CodeBadRequest, "open it with the "+info.Provider+" provider",
			"sandbox %s belongs to provider %q, not local", info.ID, info.Provider)
	}
	if !filepath.IsAbs(info.Workspace) {
		return nil, perr.New(sandbox.CodeBadRequest, "pass the Info that Create returned",
			"local sandbox %s has workspace %q, expected an absolute directory", info.ID, info.Workspace)
	}
	if err := checkEnv(spec.Env); err != nil {
		return nil, err
	}
	info.Confinement = p.Confinement()
	b := &backend{p: p, info: info, spec: spec}
	if _, err := b.openRoot(); err != nil {
		return nil, err
	}
	return sandbox.New(b), nil
}

// Destroy kills the commands exec started in the sandbox on this host
// (with every process they started; unconfined: their process groups) and
// removes its private /tmp. The workspace directory is left in place.
func (p *Provider) Destroy(_ context.Context, info sandbox.Info) error {
	p.mu.Lock()
	groups, procs := p.groups[info.ID], p.procs[info.ID]
	delete(p.groups, info.ID)
	delete(p.procs, info.ID)
	p.mu.Unlock()
	for pgid := range groups {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	for proc := range procs {
		_ = proc.Kill() // PID 1 of its namespace: the kernel kills the rest
	}
	if info.ID == "" || strings.ContainsAny(info.ID, "/\\") || info.ID == "." || info.ID == ".." {
		return nil
	}
	if err := os.RemoveAll(filepath.Join(p.opts.TmpRoot, info.ID)); err != nil {
		return perr.Wrap(err, sandbox.CodeProvider, "remove it by hand", "cannot remove the private /tmp of sandbox %s", info.ID)
	}
	return nil
}

// trackGroup records a live process group; it forgets groups that have no
// member left, so a later Destroy never signals a reused group ID.
func (p *Provider) trackGroup(id string, pgid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	gs := p.groups[id]
	if gs == nil {
		gs = map[int]bool{}
		p.groups[id] = gs
	}
	gs[pgid] = true
	for g := range gs {
		if syscall.Kill(-g, 0) == syscall.ESRCH {
			delete(gs, g)
		}
	}
}

// trackProc records a running confined init until untrack is called (it
// exited). os.Process signals through a pidfd, so a Destroy racing the
// exit never signals a reused PID.
func (p *Provider) trackProc(id string, proc *os.Process) (untrack func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := p.procs[id]
	if ps == nil {
		ps = map[*os.Process]bool{}
		p.procs[id] = ps
	}
	ps[proc] = true
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.procs[id], proc)
	}
}

// LogStart logs, at daemon start, how exec is confined: a warning in the
// unsafe mode, the Landlock ABI otherwise (with a warning below
// confine.ScopedLandlockABI, where a command with the network capability
// can reach the host's abstract unix sockets).
func (p *Provider) LogStart(log *slog.Logger) {
	if !p.Confined() {
		log.Warn("local sandbox: exec runs UNCONFINED as the daemon's user (sandbox_local_confinement: none); commands can read every file, process and port the daemon's user can",
			"confinement", ConfinementNone)
		return
	}
	abi, _ := confine.LandlockABI()
	log.Info("local sandbox: exec confined", "confinement", InfoConfined, "landlock_abi", abi, "tmp_root", p.opts.TmpRoot)
	if abi < confine.ScopedLandlockABI {
		log.Warn(fmt.Sprintf("local sandbox: Landlock ABI %d < %d (Linux 6.12): commands given the network capability can reach the host's abstract unix sockets", abi, confine.ScopedLandlockABI))
	}
}
