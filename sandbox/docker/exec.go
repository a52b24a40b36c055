package docker

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// execWrapper runs the agent's command ($2) with `sh -c` in cwd ($1, which
// must resolve inside the confinement root, see confineFunc) with
// extra environment ($3... as NAME=VALUE, applied by env to the command only,
// so PATH or LD_PRELOAD in a request cannot change the wrapper itself).
//
//   - setsid puts the command in its own session and process group, whose id
//     is its pid; the wrapper prints "polos-pid N" first so that a timeout can
//     kill the whole group from inside the container (killScript).
//   - The command's stdout and stderr go to files in /tmp, not to the exec's
//     streams: a background child (`sleep 1000 &`) that keeps them open does
//     not hold the exec open. The wrapper waits for the shell only, then
//     copies the files to its own stdout and stderr and exits, which closes
//     the streams.
//   - stdin is /dev/null.
const execWrapper = confineFunc + `inside "$1" || { echo polos-outside; exit 0; }
cd "$1" 2>/dev/null || { echo polos-nocwd; exit 0; }
cmd=$2
shift 2
d=$(mktemp -d /tmp/.polos-exec.XXXXXX) || { echo polos-notmp; exit 0; }
setsid env "$@" /bin/sh -c "$cmd" </dev/null >"$d/out" 2>"$d/err" &
pid=$!
echo "polos-pid $pid"
wait "$pid"
rc=$?
cat "$d/out"
cat "$d/err" >&2
rm -rf "$d"
exit "$rc"`

// killScript kills the process group $1 and, should the command not have
// reached setsid yet, the process $1 itself.
const killScript = `kill -KILL -"$1" 2>/dev/null || kill -KILL "$1"`

// Exec runs req.Command with /bin/sh -c inside the container (see
// execWrapper). On timeout or cancellation of ctx it kills the command's
// process group inside the container, background children included, and
// returns the output so far with ExitCode -1 and TimedOut (and no error, as
// the local provider). Output is captured in sandbox.OutputBuffer (bounded
// memory) and shaped. A command that escapes its process group
// (setsid, double fork) survives until the sandbox is destroyed.
func (b *Backend) Exec(ctx context.Context, req sandbox.ExecRequest) (sandbox.ExecResult, error) {
	var res sandbox.ExecResult
	if strings.TrimSpace(req.Command) == "" {
		return res, perr.New(sandbox.CodeBadRequest, "give the shell command to run", "exec: empty command")
	}
	if strings.IndexByte(req.Command, 0) >= 0 {
		return res, perr.New(sandbox.CodeBadRequest, "remove the NUL byte", "exec: command contains a NUL byte")
	}
	cwd, err := b.resolve(req.Cwd)
	if err != nil {
		return res, err
	}
	env, err := envList(req.Env)
	if err != nil {
		return res, err
	}
	timeout := time.Duration(req.TimeoutSec) * time.Second
	if req.TimeoutSec <= 0 {
		timeout = sandbox.DefaultExecTimeoutSec * time.Second
	}
	defer b.act.begin(b.info.ID)()

	stdout := newPIDLine(sandbox.NewOutputBuffer())
	stderr := sandbox.NewOutputBuffer()
	started := time.Now()
	p, err := b.start(ctx, b.confinedArgv(execWrapper, "polos-exec", append([]string{cwd, req.Command}, env...)...), nil, stdout, stderr)
	if err != nil {
		return res, err
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var streamErr error
	stopped := false
	select {
	case streamErr = <-p.done:
	case <-timer.C:
		stopped = true
	case <-ctx.Done():
		stopped = true
	}
	if stopped {
		streamErr = b.stop(p, stdout)
	}
	p.close()
	res.DurationMs = time.Since(started).Milliseconds()
	var outCut, errCut bool
	res.Stdout, outCut = stdout.rest.Shaped()
	res.Stderr, errCut = stderr.Shaped()
	res.Truncated = outCut || errCut
	if stopped {
		res.ExitCode, res.TimedOut = -1, true
		return res, nil
	}
	if streamErr != nil {
		return res, perr.Wrap(streamErr, sandbox.CodeProvider, "check the Docker engine", "exec: reading the output in sandbox %s", b.info.ID)
	}
	switch stdout.status() {
	case "pid":
	case "outside":
		return res, outsideWorkspace(req.Cwd)
	case "nocwd":
		return res, perr.New(sandbox.CodeNotFound, "give an existing directory as cwd", "exec: cwd %s does not exist in the sandbox", cwd)
	case "notmp":
		return res, perr.New(sandbox.CodeProvider, "the sandbox needs a writable /tmp", "exec: cannot create a temporary directory in /tmp of sandbox %s", b.info.ID)
	default:
		return res, perr.New(sandbox.CodeProvider, "the image needs /bin/sh with setsid, env, mktemp and cat (busybox or coreutils+util-linux)",
			"exec: the command wrapper did not start in sandbox %s: %s", b.info.ID, strings.TrimSpace(res.Stdout+" "+res.Stderr))
	}
	if res.ExitCode, err = p.exitCode(context.WithoutCancel(ctx)); err != nil {
		return res, err
	}
	return res, nil
}

// stop kills the command's process group inside the container and waits
// (killGrace) for the wrapper to finish copying its output.
func (b *Backend) stop(p *proc, stdout *pidLine) error {
	grace := time.NewTimer(killGrace)
	defer grace.Stop()
	select {
	case <-stdout.known:
	case err := <-p.done:
		return err
	case <-grace.C:
		return nil
	}
	if pid := stdout.pid(); pid > 0 {
		kctx, cancel := context.WithTimeout(context.Background(), killTimeout)
		_, _, _, _ = b.run(kctx, shArgv(killScript, "polos-kill", strconv.Itoa(pid)), nil, maxStderrBytes)
		cancel()
	}
	select {
	case err := <-p.done:
		return err
	case <-grace.C:
		return nil
	}
}

// pidLine reads the wrapper's first stdout line ("polos-pid N",
// "polos-outside", "polos-nocwd" or "polos-notmp") and passes everything after it to rest.
type pidLine struct {
	rest  *sandbox.OutputBuffer
	known chan struct{} // closed once the first line is parsed

	mu     sync.Mutex
	line   []byte
	done   bool
	kind   string
	number int
}

// maxPIDLine bounds the first line; longer means the wrapper did not run.
const maxPIDLine = 64

func newPIDLine(rest *sandbox.OutputBuffer) *pidLine {
	return &pidLine{rest: rest, known: make(chan struct{})}
}

func (l *pidLine) Write(p []byte) (int, error) {
	n := len(p)
	l.mu.Lock()
	if !l.done {
		i := bytes.IndexByte(p, '\n')
		if i < 0 && len(l.line)+len(p) <= maxPIDLine {
			l.line = append(l.line, p...)
			l.mu.Unlock()
			return n, nil
		}
		if i >= 0 && len(l.line)+i <= maxPIDLine {
			l.line = append(l.line, p[:i]...)
			p = p[i+1:]
			l.kind, l.number = parsePIDLine(string(l.line))
		} else {
			// Not our line: keep it as output.
			p = append(append([]byte{}, l.line...), p...)
			l.kind = "bad"
		}
		l.done = true
		close(l.known)
	}
	l.mu.Unlock()
	_, _ = l.rest.Write(p) // never fails
	return n, nil
}

func (l *pidLine) status() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done && len(l.line) > 0 {
		return "bad"
	}
	return l.kind
}

func (l *pidLine) pid() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.number
}

// parsePIDLine recognises the wrapper's first line.
func parsePIDLine(s string) (kind string, pid int) {
	switch s {
	case "polos-nocwd":
		return "nocwd", 0
	case "polos-outside":
		return "outside", 0
	case "polos-notmp":
		return "notmp", 0
	}
	if v, ok := strings.CutPrefix(s, "polos-pid "); ok {
		if n, err := strconv.Atoi(v); err == nil && n > 1 {
			return "pid", n
		}
	}
	return "bad", 0
}

var _ io.Writer = (*pidLine)(nil)
