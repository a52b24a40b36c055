package e2b

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"maps"
	"time"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

// Shell is the program commands run with: /bin/sh -c COMMAND.
const Shell = "/bin/sh"

// ExecIDEnv is set to a random value in every command's environment. envd
// kills only the process it started when a command times out, so a
// background child (sleep 1000 &) would outlive the timeout; the client then
// runs treeKillScript, which kills every process still carrying this value.
// A child that clears its environment (env -i) escapes this sweep and lives
// until the sandbox ends.
const ExecIDEnv = "POLOS_EXEC_ID"

// treeKillScript kills the processes whose initial environment holds
// POLOS_EXEC_ID=$POLOS_KILL_MARKER, in one grep over /proc (no fork per
// process). The marker arrives through the environment under another name,
// so the script never matches itself; nothing of a request is in its text.
const treeKillScript = `grep -lsxzF "` + ExecIDEnv + `=$POLOS_KILL_MARKER" /proc/[0-9]*/environ 2>/dev/null |
while IFS= read -r f; do
  p=${f#/proc/}; p=${p%/environ}
  [ "$p" = "$$" ] || kill -9 "$p" 2>/dev/null
done
exit 0`

// run is one process.Process/Start call: it collects output into stdout and
// stderr and returns what the stream said. openErr is a coded error when
// the call was refused or could not be made; readErr when the stream broke
// off (connection cut, context ended); ss.pid then tells what to kill.
func (b *Backend) run(ctx context.Context, op string, cfg wire.ProcessConfig, timeout time.Duration, stdout, stderr io.Writer) (ss startStream, openErr, readErr error) {
	noStdin := false
	body, err := b.envd.startProcess(ctx, op, wire.StartRequest{Process: cfg, Stdin: &noStdin}, timeout)
	if err != nil {
		return ss, err, nil
	}
	defer body.Close()
	readErr = ss.read(body, stdout, stderr)
	return ss, nil, readErr
}

// Exec runs req.Command as /bin/sh -c COMMAND in the workspace (or req.Cwd).
//
// The timeout travels as Connect-Timeout-Ms: envd kills the command when it
// expires and ends the stream with deadline_exceeded; the result then has
// ExitCode -1 and TimedOut, with the output so far. When the caller's
// context ends first (or envd does not end the stream within execGrace past
// the timeout) the client SIGKILLs the pid itself and reports the same. In
// both cases the background children are swept (see ExecIDEnv). A stream
// cut before its end-of-stream envelope is a CodeProvider error (the
// process is killed, its outcome is unknown); 502 is CodeSandboxLost.
func (b *Backend) Exec(ctx context.Context, req sandbox.ExecRequest) (sandbox.ExecResult, error) {
	if req.TimeoutSec < 0 {
		return sandbox.ExecResult{}, perr.New(sandbox.CodeBadRequest, "give a timeout in seconds, or 0 for the default", "exec timeout must not be negative, got %d", req.TimeoutSec)
	}
	timeout := time.Duration(req.TimeoutSec) * time.Second
	if timeout == 0 {
		timeout = sandbox.DefaultExecTimeoutSec * time.Second
	}
	cwd := b.info.Workspace
	if req.Cwd != "" {
		loc, err := b.locate(ctx, req.Cwd)
		if err != nil {
			return sandbox.ExecResult{}, err
		}
		if err := loc.wantDir(req.Cwd); err != nil {
			return sandbox.ExecResult{}, err
		}
		cwd = loc.lexical // the path as given, so pwd shows it
	}
	marker := newMarker()
	envs := maps.Clone(req.Env)
	if envs == nil {
		envs = map[string]string{}
	}
	envs[ExecIDEnv] = marker

	start := time.Now()
	streamCtx, cancel := context.WithTimeout(ctx, timeout+execGrace)
	defer cancel()
	stdout, stderr := sandbox.NewOutputBuffer(), sandbox.NewOutputBuffer()
	ss, openErr, readErr := b.run(streamCtx, "exec", wire.ProcessConfig{Cmd: Shell, Args: []string{"-c", req.Command}, Envs: envs, Cwd: cwd}, timeout, stdout, stderr)
	result := func(exitCode int, timedOut bool) sandbox.ExecResult {
		res := sandbox.ExecResult{ExitCode: exitCode, TimedOut: timedOut, DurationMs: time.Since(start).Milliseconds()}
		var cutOut, cutErr bool
		res.Stdout, cutOut = stdout.Shaped()
		res.Stderr, cutErr = stderr.Shaped()
		res.Truncated = cutOut || cutErr
		return res
	}
	switch {
	case openErr != nil && streamCtx.Err() == nil:
		return sandbox.ExecResult{}, openErr // refused (HTTP error) or unreachable
	case (openErr != nil || readErr != nil) && streamCtx.Err() != nil:
		// The caller gave up, or envd never ended the stream: kill it ourselves.
		b.kill(ss.pid, marker)
		return result(-1, true), nil
	case readErr != nil:
		b.kill(ss.pid, marker)
		return sandbox.ExecResult{}, perr.Wrap(readErr, sandbox.CodeProvider, "retry the command; check that the sandbox is still running", "e2b exec: expected the command's stream to end with an end-of-stream envelope, it broke off")
	case ss.failure != nil && ss.failure.Code == wire.ConnectDeadlineExceeded:
		b.kill(0, marker) // envd killed the shell; sweep its children
		return result(-1, true), nil
	case ss.failure != nil:
		return sandbox.ExecResult{}, connectFailure("exec", ss.failure)
	case ss.end == nil:
		return sandbox.ExecResult{}, perr.New(sandbox.CodeProvider, fixReportBug, "e2b exec: expected an end event before the end of the stream, got none")
	}
	return result(int(ss.end.ExitCode), false), nil
}

// kill SIGKILLs pid (when known) and sweeps the processes carrying marker,
// on a fresh context: it runs when the caller's context may be over. It is
// best effort: the sandbox may be gone, which ends its processes anyway.
func (b *Backend) kill(pid uint32, marker string) {
	ctx, cancel := context.WithTimeout(context.Background(), killTimeout)
	defer cancel()
	if pid != 0 {
		_ = b.envd.sendSignal(ctx, pid, wire.SignalKill)
	}
	_, _, _ = b.run(ctx, "kill background processes", wire.ProcessConfig{
		Cmd: Shell, Args: []string{"-c", treeKillScript}, Envs: map[string]string{"POLOS_KILL_MARKER": marker}, Cwd: "/",
	}, killTimeout, io.Discard, io.Discard)
}

func newMarker() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// connectFailure maps the error of a 0x02 envelope to a coded error.
func connectFailure(op string, ce *wire.ConnectError) error {
	code := sandbox.CodeProvider
	fix := fixReportBug
	switch ce.Code {
	case wire.ConnectInvalidArgument:
		code, fix = sandbox.CodeBadRequest, "fix the request as the message says"
	case wire.ConnectNotFound:
		code, fix = sandbox.CodeNotFound, "check the path"
	case "unavailable", "resource_exhausted":
		code, fix = sandbox.CodeUnavailable, fixRetry
	}
	return perr.New(code, fix, "e2b %s: envd answered %s: %s", op, ce.Code, ce.Message)
}
