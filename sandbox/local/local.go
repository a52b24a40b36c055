// Package local is the sandbox provider that runs tools directly on the host,
// confined to a workspace directory. It gives no isolation for exec (a
// command can do anything the daemon's user can), which is why policy asks a
// person before every local exec; what it does guarantee:
//
//   - Every file operation (read, write, edit, glob, grep) goes through
//     os.Root opened on the workspace: no escape by "..", by an absolute path
//     outside, or by a symlink in any component (leaf or parent), for reads
//     and writes alike. Such paths fail with CodeOutsideWorkspace.
//   - exec runs "/bin/sh -c COMMAND" in its own process group, with a
//     scrubbed environment (see Env): the daemon's secrets (API keys, tokens)
//     never reach it.
//   - A timeout (or cancellation) kills the whole process group, background
//     children included. Children that leave the group (setsid) escape this.
//   - exec returns when the shell exits, even when a background child keeps
//     stdout open: output is collected for PipeDrainGrace after the exit, then
//     the rest of the child's output is discarded.
//
// Destroy never deletes the workspace (it is the user's directory): it kills
// the process groups exec started in that sandbox on this host.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
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

	"github.com/polos-run/polos/internal/perr"
	"github.com/polos-run/polos/sandbox"
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
	Shell = "/bin/sh"
)

// Provider is the local sandbox provider. Its zero value is not usable; use New.
type Provider struct {
	mu     sync.Mutex
	groups map[string]map[int]bool // sandbox ID -> process groups exec started
}

// New returns a local provider.
func New() *Provider { return &Provider{groups: map[string]map[int]bool{}} }

func (p *Provider) Name() string { return sandbox.ProviderLocal }

// ID is the sandbox ID of a workspace and owner: a hash of both, so creating
// the same sandbox twice gives the same ID.
func ID(workspace, owner string) string {
	h := sha256.Sum256([]byte(workspace + "\x00" + owner))
	return "local-" + hex.EncodeToString(h[:8])
}

// Create makes spec.WorkspaceDir (and its parents) if missing and returns the
// sandbox on it. Info.Workspace is the absolute path with symlinks resolved.
func (p *Provider) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
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
	info := sandbox.Info{Provider: sandbox.ProviderLocal, ID: ID(abs, spec.Owner), Workspace: abs}
	return p.Open(ctx, info, spec)
}

// Open returns the sandbox for info; CodeSandboxLost when its workspace
// directory no longer exists.
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
	b := &backend{p: p, info: info, spec: spec}
	if _, err := b.openRoot(); err != nil {
		return nil, err
	}
	return sandbox.New(b), nil
}

// Destroy kills the process groups exec started in the sandbox on this host
// (background servers included). The workspace directory is left in place.
func (p *Provider) Destroy(_ context.Context, info sandbox.Info) error {
	p.mu.Lock()
	groups := p.groups[info.ID]
	delete(p.groups, info.ID)
	p.mu.Unlock()
	for pgid := range groups {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	return nil
}

// track records a live process group; it forgets groups that have no member
// left, so a later Destroy never signals a reused group ID.
func (p *Provider) track(id string, pgid int) {
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

// Exec runs req.Command with /bin/sh in its own process group.
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

	timeout := time.Duration(req.TimeoutSec) * time.Second
	if timeout <= 0 {
		timeout = sandbox.DefaultExecTimeoutSec * time.Second
	}
	cmd := exec.Command(Shell, "-c", req.Command)
	cmd.Dir = filepath.Join(b.info.Workspace, filepath.FromSlash(rel))
	cmd.Env = Env(b.info.Workspace, b.spec.Env, req.Env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
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
	cmd.Stdout, cmd.Stderr = outW, errW
	startErr := cmd.Start()
	outW.Close()
	errW.Close()
	if startErr != nil {
		outR.Close()
		errR.Close()
		return sandbox.ExecResult{}, perr.Wrap(startErr, sandbox.CodeProvider, "check that "+Shell+" exists", "cannot start %s", Shell)
	}
	pgid := cmd.Process.Pid
	b.p.track(b.info.ID, pgid)
	outDone, outDetach := drain(outR, stdout)
	errDone, errDetach := drain(errR, stderr)

	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
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
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
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

	res := sandbox.ExecResult{ExitCode: cmd.ProcessState.ExitCode(), TimedOut: killed}
	if killed {
		res.ExitCode = -1
	}
	var outCut, errCut bool
	res.Stdout, outCut = stdout.Shaped()
	res.Stderr, errCut = stderr.Shaped()
	res.Truncated = outCut || errCut
	return res, nil
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
