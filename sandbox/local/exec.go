package local

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/local/confine"
)

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
