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
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
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

type backend struct {
	p    *Provider
	info sandbox.Info
	spec sandbox.Spec
}

func (b *backend) Info() sandbox.Info { return b.info }

// openRoot opens the workspace afresh for each operation, so a workspace
// removed and recreated is seen as it is now, and no descriptor outlives the
// operation.
func (b *backend) openRoot() (*os.Root, error) {
	r, err := os.OpenRoot(b.info.Workspace)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, perr.Wrap(err, sandbox.CodeSandboxLost, "create a new sandbox",
				"the workspace %s of local sandbox %s no longer exists", b.info.Workspace, b.info.ID)
		}
		return nil, perr.Wrap(err, sandbox.CodeProvider, "check the workspace directory's permissions",
			"cannot open the workspace %s", b.info.Workspace)
	}
	return r, nil
}

// resolve confines p lexically and opens the root it is resolved in.
func (b *backend) resolve(p string) (*os.Root, string, error) {
	rel, err := sandbox.WorkspaceRel(b.info.Workspace, p)
	if err != nil {
		return nil, "", err
	}
	r, err := b.openRoot()
	if err != nil {
		return nil, "", err
	}
	return r, rel, nil
}

// isEscape reports an os.Root refusal to leave the root. os.Root does not
// export this error; TestRootEscapeDetected pins the text.
func isEscape(err error) bool {
	return err != nil && strings.Contains(err.Error(), "path escapes from parent")
}

// fileErr turns an os error on path p into a coded error.
func (b *backend) fileErr(err error, p string) error {
	switch {
	case isEscape(err):
		return perr.New(sandbox.CodeOutsideWorkspace, "use paths inside the workspace; symlinks may not lead out of it",
			"path %q leads outside the workspace %s (through \"..\" or a symlink)", p, b.info.Workspace)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		if _, serr := os.Stat(b.info.Workspace); serr != nil {
			return perr.Wrap(err, sandbox.CodeSandboxLost, "create a new sandbox",
				"the workspace %s of local sandbox %s no longer exists", b.info.Workspace, b.info.ID)
		}
		return perr.New(sandbox.CodeNotFound, "check the path with glob", "no file or directory %q in the workspace", p)
	case errors.Is(err, syscall.EISDIR):
		return perr.New(sandbox.CodeBadRequest, "list a directory with glob", "%q is a directory, not a file", p)
	case errors.Is(err, syscall.ELOOP):
		return perr.New(sandbox.CodeBadRequest, "remove the symlink loop", "path %q has too many levels of symlinks", p)
	case errors.Is(err, fs.ErrPermission):
		return perr.Wrap(err, sandbox.CodeProvider, "fix the file's permissions with exec (chmod)", "permission denied on %q", p)
	}
	return perr.Wrap(err, sandbox.CodeProvider, "", "file operation on %q failed", p)
}

// openRegular opens rel in r and refuses anything but a regular file. The
// open is non-blocking so a FIFO planted in the workspace cannot hang it.
func (b *backend) openRegular(r *os.Root, rel, p string, flag int) (*os.File, error) {
	f, err := r.OpenFile(rel, flag|syscall.O_NONBLOCK, 0o644)
	if err != nil {
		return nil, b.fileErr(err, p)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, b.fileErr(err, p)
	}
	if st.IsDir() {
		f.Close()
		return nil, b.fileErr(syscall.EISDIR, p)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, perr.New(sandbox.CodeBadRequest, "use exec for devices, sockets and pipes", "%q is not a regular file (%s)", p, st.Mode().Type())
	}
	return f, nil
}

func (b *backend) ReadFile(_ context.Context, p string, maxBytes int64) ([]byte, error) {
	r, rel, err := b.resolve(p)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	f, err := b.openRegular(r, rel, p, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
	if err != nil {
		return nil, b.fileErr(err, p)
	}
	return data, nil
}

func (b *backend) WriteFile(_ context.Context, p string, data []byte) error {
	r, rel, err := b.resolve(p)
	if err != nil {
		return err
	}
	defer r.Close()
	if rel == "." {
		return perr.New(sandbox.CodeBadRequest, "give a file path inside the workspace", "cannot write to the workspace directory itself")
	}
	if dir := path.Dir(rel); dir != "." {
		if err := r.MkdirAll(dir, 0o755); err != nil {
			return b.fileErr(err, p)
		}
	}
	// No O_TRUNC at open: the file is checked to be regular before it is cut.
	f, err := b.openRegular(r, rel, p, os.O_WRONLY|os.O_CREATE)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(0); err != nil {
		return b.fileErr(err, p)
	}
	if _, err := f.Write(data); err != nil {
		return b.fileErr(err, p)
	}
	return b.fileErrOrNil(f.Close(), p)
}

func (b *backend) fileErrOrNil(err error, p string) error {
	if err == nil || errors.Is(err, os.ErrClosed) {
		return nil
	}
	return b.fileErr(err, p)
}

func (b *backend) Walk(ctx context.Context, root string, fn func(rel string, isDir bool) error) error {
	r, rel, err := b.resolve(root)
	if err != nil {
		return err
	}
	defer r.Close()
	return fs.WalkDir(r.FS(), rel, func(p string, d fs.DirEntry, err error) error {
		if p == rel {
			if err != nil {
				return b.fileErr(err, root)
			}
			if !d.IsDir() {
				return perr.New(sandbox.CodeBadRequest, "give a directory as cwd", "%q is not a directory", root)
			}
			return nil
		}
		if err != nil {
			return nil // an unreadable subdirectory is skipped
		}
		if rel != "." {
			p = p[len(rel)+1:]
		}
		return fn(p, d.IsDir())
	})
}

// Env returns the environment of a local exec: only PATH (the daemon's, or
// DefaultPATH), HOME (the workspace), LANG (the daemon's, or DefaultLang),
// TERM=dumb and TZ (when the daemon has one) pass from the daemon; then the
// sandbox's spec.Env, then the request's env, later ones winning. Nothing else
// of the daemon's environment (API keys, tokens) reaches the command. The
// request may set PATH: the command could do so itself. Dynamic-loader
// variables (LD_*, DYLD_*) are refused by checkEnv.
func Env(workspace string, specEnv, reqEnv map[string]string) []string {
	env := map[string]string{
		"PATH": cmpOr(os.Getenv("PATH"), DefaultPATH),
		"HOME": workspace,
		"LANG": cmpOr(os.Getenv("LANG"), DefaultLang),
		"TERM": "dumb",
	}
	if tz := os.Getenv("TZ"); tz != "" {
		env["TZ"] = tz
	}
	for _, m := range []map[string]string{specEnv, reqEnv} {
		for k, v := range m {
			env[k] = v
		}
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// checkEnv refuses dynamic-loader variables (LD_PRELOAD, LD_LIBRARY_PATH,
// LD_AUDIT, DYLD_INSERT_LIBRARIES, ...): they would load code into every
// program the command runs, a channel that command policy, which reads the
// command text, does not see. Refusing (rather than dropping) tells the
// agent why its variable had no effect.
func checkEnv(env map[string]string) error {
	for k := range env {
		if strings.HasPrefix(k, "LD_") || strings.HasPrefix(k, "DYLD_") {
			return perr.New(sandbox.CodeBadRequest, "remove "+k+" from env; set it inside the command if policy allows",
				"env variable %s is refused by the local sandbox: dynamic-loader variables may not be passed", k)
		}
	}
	return nil
}

// Exec runs req.Command confined (see the package documentation), or, in
// the unsafe mode, with /bin/sh in its own process group. A sandbox that
// could not be built is CodeProvider with the failed step.
func (b *backend) Exec(ctx context.Context, req sandbox.ExecRequest) (sandbox.ExecResult, error) {
	if err := checkEnv(req.Env); err != nil {
		return sandbox.ExecResult{}, err
	}
	r, rel, err := b.resolve(req.Cwd)
	if err != nil {
		return sandbox.ExecResult{}, err
	}
	st, err := r.Stat(rel)
	r.Close()
	if err != nil {
		return sandbox.ExecResult{}, b.fileErr(err, req.Cwd)
	}
	if !st.IsDir() {
		return sandbox.ExecResult{}, perr.New(sandbox.CodeBadRequest, "give a directory as cwd", "exec cwd %q is not a directory", req.Cwd)
	}
	if err := b.p.Check(ctx); err != nil {
		return sandbox.ExecResult{}, err
	}

	timeout := time.Duration(req.TimeoutSec) * time.Second
	if timeout <= 0 {
		timeout = sandbox.DefaultExecTimeoutSec * time.Second
	}
	stdout, stderr := sandbox.NewOutputBuffer(), sandbox.NewOutputBuffer()
	outR, outW, err := os.Pipe()
	if err != nil {
		return sandbox.ExecResult{}, perr.Wrap(err, sandbox.CodeProvider, "", "cannot create a pipe for exec")
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return sandbox.ExecResult{}, perr.Wrap(err, sandbox.CodeProvider, "", "cannot create a pipe for exec")
	}
	cwd := filepath.Join(b.info.Workspace, filepath.FromSlash(rel))
	env := Env(b.info.Workspace, b.spec.Env, req.Env)
	var proc *process
	if b.p.Confined() {
		proc, err = b.startConfined(req, cwd, env, outW, errW)
	} else {
		proc, err = b.startUnconfined(req, cwd, env, outW, errW)
	}
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return sandbox.ExecResult{}, err
	}
	outDone, outDetach := drain(outR, stdout)
	errDone, errDetach := drain(errR, stderr)

	exited := make(chan struct{})
	go func() { _ = proc.cmd.Wait(); close(exited) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	killed := false
	select {
	case <-exited:
	case <-timer.C:
		killed = true
	case <-ctx.Done():
		killed = true
	}
	if killed {
		proc.kill()
		<-exited
	}
	proc.exited()
	if err := proc.setupError(); err != nil {
		outR.Close()
		errR.Close()
		return sandbox.ExecResult{}, perr.Wrap(err, sandbox.CodeProvider,
			"check the daemon's log and the kernel features in docs/adr/0111-local-exec-confinement.md",
			"the confined sandbox for this command could not be built")
	}
	// Unconfined, a background child may still hold the pipes; confined,
	// every process of the command is dead by now and this returns at once.
	grace, cancel := context.WithTimeout(context.Background(), PipeDrainGrace)
	defer cancel()
	for _, done := range []<-chan struct{}{outDone, errDone} {
		select {
		case <-done:
		case <-grace.Done():
		}
	}
	outDetach.Store(true)
	errDetach.Store(true)

	res := sandbox.ExecResult{ExitCode: proc.cmd.ProcessState.ExitCode(), TimedOut: killed}
	if killed {
		res.ExitCode = -1
	}
	var outCut, errCut bool
	res.Stdout, outCut = stdout.Shaped()
	res.Stderr, errCut = stderr.Shaped()
	res.Truncated = outCut || errCut
	return res, nil
}

// process is one started command.
type process struct {
	cmd        *exec.Cmd
	kill       func()       // kills everything the command started
	exited     func()       // called once the command was waited for
	setupError func() error // after the exit: why the sandbox failed to build
}

// startConfined starts the command through confine's init (ADR 0111).
func (b *backend) startConfined(req sandbox.ExecRequest, cwd string, env []string, stdout, stderr *os.File) (*process, error) {
	tmp, err := b.p.tmpDir(b.info.ID)
	if err != nil {
		return nil, err
	}
	c, err := confine.Command(confine.Config{
		Workspace: b.info.Workspace, Tmp: tmp, Cwd: cwd, Command: req.Command, Env: env,
		Network: req.Network, ReadOnly: b.p.opts.ReadOnlyPaths,
	})
	if err != nil {
		return nil, perr.Wrap(err, sandbox.CodeProvider, "", "cannot prepare the confined sandbox")
	}
	c.Stdout, c.Stderr = stdout, stderr
	if err := c.Start(); err != nil {
		return nil, perr.Wrap(err, sandbox.CodeProvider, "run polosd where user namespaces are allowed, or see docs/adr/0111-local-exec-confinement.md",
			"cannot start the confined sandbox")
	}
	untrack := b.p.trackProc(b.info.ID, c.Process)
	return &process{
		cmd:        c.Cmd,
		kill:       func() { _ = c.Process.Kill() }, // PID 1 of the namespace: the kernel kills the rest
		exited:     untrack,
		setupError: c.SetupError,
	}, nil
}

// startUnconfined starts /bin/sh -c COMMAND as the daemon's user in a new
// process group (the unsafe mode).
func (b *backend) startUnconfined(req sandbox.ExecRequest, cwd string, env []string, stdout, stderr *os.File) (*process, error) {
	cmd := exec.Command(Shell, "-c", req.Command)
	cmd.Dir, cmd.Env = cwd, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return nil, perr.Wrap(err, sandbox.CodeProvider, "check that "+Shell+" exists", "cannot start %s", Shell)
	}
	pgid := cmd.Process.Pid
	b.p.trackGroup(b.info.ID, pgid)
	return &process{
		cmd:        cmd,
		kill:       func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) },
		exited:     func() {},
		setupError: func() error { return nil },
	}, nil
}

// drain copies r into buf until EOF; once detached is set it discards what
// it reads, so a background child writing after exec returned neither fills
// memory nor gets SIGPIPE. r is closed at EOF.
func drain(r *os.File, buf *sandbox.OutputBuffer) (<-chan struct{}, *atomic.Bool) {
	done := make(chan struct{})
	detached := new(atomic.Bool)
	go func() {
		defer close(done)
		defer r.Close()
		p := make([]byte, 32<<10)
		for {
			n, err := r.Read(p)
			if n > 0 && !detached.Load() {
				buf.Write(p[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	return done, detached
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
