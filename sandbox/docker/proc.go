package docker

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// Timings of process handling inside the container.
const (
	// exitPollTimeout bounds how long we wait, after the output streams
	// closed, for the engine to record the exit code.
	exitPollTimeout = 10 * time.Second
	// killTimeout bounds the exec that kills a timed-out command.
	killTimeout = 15 * time.Second
	// killGrace is how long we wait for the output streams to close after
	// the kill before giving up on them.
	killGrace = 15 * time.Second
)

// proc is one process started in the container through the exec API, with
// its stdout and stderr copied (demultiplexed) into writers until it exits.
type proc struct {
	b      *Backend
	execID string
	conn   io.Closer
	done   chan error // receives the copy's result once, then is closed
	once   sync.Once
}

// start runs argv in the container as the container's user, from "/", with
// the container's environment. Nothing in argv is interpreted by a shell
// unless argv itself is a shell with a constant script. If stdin is not nil
// it is streamed to the process and then closed.
func (b *Backend) start(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) (*proc, error) {
	created, err := b.cli.ContainerExecCreate(ctx, b.info.ID, container.ExecOptions{
		AttachStdin:  stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
		WorkingDir:   "/",
		Cmd:          argv,
	})
	if err != nil {
		return nil, b.engineErr(err, "exec create")
	}
	hj, err := b.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return nil, b.engineErr(err, "exec start")
	}
	p := &proc{b: b, execID: created.ID, conn: hj.Conn, done: make(chan error, 1)}
	if stdin != nil {
		go func() {
			_, _ = io.Copy(hj.Conn, stdin)
			_ = hj.CloseWrite()
		}()
	}
	go func() {
		_, err := stdcopy.StdCopy(stdout, stderr, hj.Reader)
		p.done <- err
		close(p.done)
	}()
	return p, nil
}

// wait returns the exit code once the output streams closed and the engine
// recorded the exit. When ctx ends first it drops the connection (the
// process may linger in the container) and returns ctx's error.
func (p *proc) wait(ctx context.Context) (int, error) {
	select {
	case err := <-p.done:
		p.close()
		if err != nil {
			return 0, perr.Wrap(err, sandbox.CodeProvider, "check the Docker engine", "reading the output of a command in sandbox %s", p.b.info.ID)
		}
		return p.exitCode(ctx)
	case <-ctx.Done():
		p.close()
		return 0, ctx.Err()
	}
}

// exitCode polls the engine until it reports the process as finished.
func (p *proc) exitCode(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, exitPollTimeout)
	defer cancel()
	delay := time.Millisecond
	for {
		ins, err := p.b.cli.ContainerExecInspect(ctx, p.execID)
		if err != nil {
			return 0, p.b.engineErr(err, "exec inspect")
		}
		if !ins.Running {
			return ins.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, perr.Wrap(ctx.Err(), sandbox.CodeProvider, "check the Docker engine", "the engine did not report the exit of a command in sandbox %s", p.b.info.ID)
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

func (p *proc) close() { p.once.Do(func() { _ = p.conn.Close() }) }

// run is start + wait with output captured in memory (at most limit bytes of
// stdout; more is an error), for the file primitives.
func (b *Backend) run(ctx context.Context, argv []string, stdin io.Reader, limit int64) (code int, stdout, stderr []byte, err error) {
	out := &cappedBuffer{limit: limit}
	errOut := &cappedBuffer{limit: maxStderrBytes}
	p, err := b.start(ctx, argv, stdin, out, errOut)
	if err != nil {
		return 0, nil, nil, err
	}
	code, err = p.wait(ctx)
	if err == nil && out.over {
		err = perr.New(sandbox.CodeTooLarge, "narrow the request", "output of %s in sandbox %s is over %d bytes", argv[0], b.info.ID, limit)
	}
	return code, out.buf, errOut.buf, err
}

// maxStderrBytes caps the error text kept from a file primitive.
const maxStderrBytes = 64 << 10

// cappedBuffer keeps at most limit bytes and remembers whether more came.
type cappedBuffer struct {
	limit int64
	buf   []byte
	over  bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	room := c.limit - int64(len(c.buf))
	if int64(len(p)) > room {
		c.over = true
		c.buf = append(c.buf, p[:max(room, 0)]...)
	} else {
		c.buf = append(c.buf, p...)
	}
	return len(p), nil
}

// engineErr maps an engine error: a missing or stopped container is
// CodeSandboxLost, anything else CodeProvider.
func (b *Backend) engineErr(err error, what string) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if cerrdefs.IsNotFound(err) || cerrdefs.IsConflict(err) {
		return perr.Wrap(err, sandbox.CodeSandboxLost, "create a new sandbox: its container was removed or stopped",
			"docker sandbox %s is gone (%s)", b.info.ID, what)
	}
	return perr.Wrap(err, sandbox.CodeProvider, "check that the Docker engine is running (docker info) and its log",
		"docker engine failed during %s in sandbox %s", what, b.info.ID)
}
