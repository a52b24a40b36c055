package e2bfake

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

// chunkSize is envd's largest stdout/stderr data event.
const chunkSize = 32 << 10

// process is one running command.
type process struct {
	cmd        *exec.Cmd
	leaderOnly bool
	done       chan struct{} // closed when the command has been waited for
}

// kill sends SIGKILL (or SIGTERM) to the process group, or to the started
// process alone with SignalLeaderOnly.
func (p *process) kill(term bool) error {
	sig := syscall.SIGKILL
	if term {
		sig = syscall.SIGTERM
	}
	pid := p.cmd.Process.Pid
	if p.leaderOnly {
		return syscall.Kill(pid, sig)
	}
	return syscall.Kill(-pid, sig) // the group: Setpgid made pid its id
}

// stream writes envelopes to a Start response, one flush per envelope.
// Writes after the client has gone fail silently: like envd, the command
// keeps running when the stream is disconnected.
type stream struct {
	mu     sync.Mutex
	w      http.ResponseWriter
	rc     *http.ResponseController
	closed bool // the handler returned: w must not be touched any more
}

func (st *stream) close() {
	st.mu.Lock()
	st.closed = true
	st.mu.Unlock()
}

func (st *stream) send(flags byte, v any) {
	b, _ := json.Marshal(v)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return
	}
	if wire.WriteEnvelope(st.w, flags, b) == nil {
		st.rc.Flush()
	}
}

func (st *stream) event(ev wire.ProcessEvent) {
	st.send(wire.FlagMessage, wire.StartResponse{Event: ev})
}

func (st *stream) fail(code, msg string) {
	st.send(wire.FlagEndStream, wire.EndStream{Error: &wire.ConnectError{Code: code, Message: msg}})
}

// output turns a command's writes into data events of at most chunkSize.
type output struct {
	st     *stream
	stderr bool
	// started is closed once the start event is sent: envd never sends
	// output before it, and a fast command writes before cmd.Start returns.
	started <-chan struct{}
}

func (o output) Write(p []byte) (int, error) {
	<-o.started
	for rest := p; len(rest) > 0; {
		n := min(len(rest), chunkSize)
		chunk := append([]byte(nil), rest[:n]...)
		d := &wire.DataEvent{Stdout: chunk}
		if o.stderr {
			d = &wire.DataEvent{Stderr: chunk}
		}
		o.st.event(wire.ProcessEvent{Data: d})
		rest = rest[n:]
	}
	return len(p), nil
}

// start serves process.Process/Start: it runs the command for real and
// streams start, data, end and the end-of-stream envelope as envd does.
func (s *Server) start(sb *fakeSandbox, w http.ResponseWriter, r *http.Request) {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != wire.ContentTypeConnectJSON {
		w.WriteHeader(http.StatusUnsupportedMediaType)
		return
	}
	s.mu.Lock()
	s.starts++
	s.mu.Unlock()
	st := &stream{w: w, rc: http.NewResponseController(w)}
	defer st.close() // late writes of a child holding the pipes are dropped
	w.Header().Set("Content-Type", wire.ContentTypeConnectJSON)
	w.WriteHeader(http.StatusOK)

	flags, payload, err := wire.ReadEnvelope(r.Body, wire.MaxEnvelopeBytes)
	var req wire.StartRequest
	if err == nil && flags != wire.FlagMessage {
		err = fmt.Errorf("unexpected envelope flags %#x", flags)
	}
	if err == nil {
		err = json.Unmarshal(payload, &req)
	}
	if err != nil {
		st.fail(wire.ConnectInvalidArgument, "unmarshal message: "+err.Error())
		return
	}
	timeout, err := connectTimeout(r.Header.Get(wire.HeaderConnectTimeout))
	if err != nil {
		st.fail(wire.ConnectInvalidArgument, err.Error())
		return
	}
	cwd := homeDir
	if req.Process.Cwd != "" {
		cwd = sandboxPath(req.Process.Cwd)
	}
	realCwd, err := sb.resolve(cwd, true)
	if err == nil {
		var info os.FileInfo
		if info, err = sb.root.Stat(rootRel(realCwd)); err == nil && !info.IsDir() {
			err = errors.New("not a directory")
		}
	}
	if err != nil {
		st.fail(wire.ConnectInvalidArgument, fmt.Sprintf("cwd '%s' does not exist", cwd))
		return
	}

	// Like envd, the command runs under the sandbox's context, not the
	// request's: a client disconnect does not kill it; its timeout does.
	ctx, cancel := sb.ctx, context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(sb.ctx, timeout)
	}
	defer cancel()
	cmd := s.command(ctx, sb, cwd, realCwd, req.Process)
	started := make(chan struct{})
	cmd.Stdout = output{st: st, started: started}
	cmd.Stderr = output{st: st, stderr: true, started: started}
	cmd.WaitDelay = waitDelay
	p := &process{cmd: cmd, leaderOnly: s.opts.SignalLeaderOnly, done: make(chan struct{})}
	cmd.Cancel = func() error { return p.kill(false) }
	if err := cmd.Start(); err != nil {
		close(started)
		st.fail(wire.ConnectInternal, fmt.Sprintf("error starting process '%s': %v", req.Process.Cmd, err))
		return
	}
	pid := uint32(cmd.Process.Pid)
	sb.mu.Lock()
	sb.procs[pid] = p
	sb.mu.Unlock()
	defer func() {
		sb.mu.Lock()
		delete(sb.procs, pid)
		sb.mu.Unlock()
		close(p.done)
	}()
	st.event(wire.ProcessEvent{Start: &wire.StartEvent{Pid: pid}})
	close(started)

	stopKeepalive := s.keepalive(st, r.Header.Get(wire.HeaderKeepalive))
	waitErr := cmd.Wait()
	stopKeepalive()

	switch {
	case sb.ctx.Err() != nil:
		return // the sandbox is gone: the proxy cuts the connection
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		st.fail(wire.ConnectDeadlineExceeded, "context deadline exceeded")
		return
	}
	st.event(wire.ProcessEvent{End: endEvent(cmd.ProcessState, waitErr)})
	if s.takeOne(&s.truncateStreams) {
		return
	}
	st.send(wire.FlagEndStream, wire.EndStream{})
}

// endEvent builds the end event as envd does from ProcessState: exitCode
// -1 for a signal, exited only for a normal exit, error only on failure.
func endEvent(ps *os.ProcessState, waitErr error) *wire.EndEvent {
	end := &wire.EndEvent{ExitCode: int32(ps.ExitCode()), Exited: ps.Exited(), Status: ps.String()}
	var exitErr *exec.ExitError
	if errors.As(waitErr, &exitErr) {
		msg := exitErr.Error()
		end.Error = &msg
	}
	return end
}

// keepalive sends keepalive events until the returned stop is called.
func (s *Server) keepalive(st *stream, header string) (stop func()) {
	every := s.opts.Keepalive
	if every <= 0 {
		every = defaultKeepalive
		if sec, err := strconv.Atoi(header); err == nil && sec > 0 {
			every = time.Duration(sec) * time.Second
		}
	}
	t := time.NewTicker(every)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-t.C:
				st.event(wire.ProcessEvent{Keepalive: &struct{}{}})
			case <-done:
				return
			}
		}
	}()
	return func() { t.Stop(); close(done) }
}

// connectTimeout parses Connect-Timeout-Ms (at most 10 digits); "" = none.
func connectTimeout(h string) (time.Duration, error) {
	if h == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(h, 10, 64)
	if err != nil || ms < 0 || len(h) > 10 {
		return 0, fmt.Errorf("protocol error: invalid timeout %q", h)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// holderScript runs as the first process of a sandbox's private user and
// mount namespace: it puts the sandbox's /home/user and /tmp where commands
// expect them and then waits forever; every command of the sandbox joins
// its namespaces with nsenter, so they all see one filesystem, as on one
// machine. Its arguments are host directories, never client text.
const holderScript = `set -e
mount --make-rprivate /
mount -t tmpfs -o mode=755 e2bfake-home /home
mkdir -p /home/user
mount --bind "$1" /home/user
mount --bind "$2" /tmp
echo ready
exec sleep infinity`

// cdScript enters the cwd inside the namespaces and execs the command,
// keeping the pid that the start event reports.
const cdScript = `cd "$1" && shift && exec "$@"`

// startHolder starts the namespace holder of sb and waits until its mounts
// are in place.
func startHolder(sb *fakeSandbox) (*exec.Cmd, error) {
	cmd := exec.Command("/bin/sh", "-c", holderScript, "e2bfake-holder", sb.hostPath(homeDir), sb.hostPath("/tmp"))
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:     true,
		Pdeathsig:   syscall.SIGKILL,
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(holderStartTimeout):
		err = errors.New("timed out")
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("e2bfake: namespace holder did not start: %v: %s", err, stderr.String())
	}
	return cmd, nil
}

// stopHolder kills and reaps a holder (nil is fine).
func stopHolder(h *exec.Cmd) {
	if h != nil {
		h.Process.Kill()
		h.Wait()
	}
}

// command builds the exec.Cmd of a Start, in its own process group. With a
// namespace holder it runs inside the sandbox's namespaces (commands and
// /files then see the same /home/user and /tmp); without, on the host
// filesystem in the mapped cwd.
func (s *Server) command(ctx context.Context, sb *fakeSandbox, cwd, realCwd string, pc wire.ProcessConfig) *exec.Cmd {
	var cmd *exec.Cmd
	if sb.holder != nil {
		args := append([]string{"--target", strconv.Itoa(sb.holder.Process.Pid), "--user", "--mount", "--",
			"/bin/sh", "-c", cdScript, "e2bfake-cd", cwd, pc.Cmd}, pc.Args...)
		cmd = exec.CommandContext(ctx, s.nsenter, args...)
	} else {
		cmd = exec.CommandContext(ctx, pc.Cmd, pc.Args...)
		cmd.Dir = sb.hostPath(realCwd)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = sb.env(sb.holder != nil, pc.Envs)
	return cmd
}

// probeNamespaces decides whether sandboxes get namespaces here: it needs
// nsenter and user namespaces (unprivileged, or root).
func (s *Server) probeNamespaces() {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return
	}
	dir, err := os.MkdirTemp(s.dir, "probe-")
	if err != nil {
		return
	}
	defer os.RemoveAll(dir)
	sb := &fakeSandbox{dir: dir}
	for _, d := range []string{homeDir, "/tmp"} {
		if os.MkdirAll(sb.hostPath(d), 0o755) != nil {
			return
		}
	}
	if sb.holder, err = startHolder(sb); err != nil {
		return
	}
	defer stopHolder(sb.holder)
	s.nsenter = nsenter
	cmd := s.command(context.Background(), sb, homeDir, homeDir, wire.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", `[ "$(pwd)" = /home/user ]`}})
	s.namespaces = cmd.Run() == nil
}

// env is envd's process environment: PATH, HOME, USER, LOGNAME, the
// sandbox's envVars, then the request's envs (later wins). Without
// namespaces HOME is the mapped /home/user, so "cd ~" stays in the sandbox.
func (sb *fakeSandbox) env(namespaces bool, envs map[string]string) []string {
	home := homeDir
	if !namespaces {
		home = sb.hostPath(homeDir)
	}
	out := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"USER=" + defaultUser,
		"LOGNAME=" + defaultUser,
	}
	for k, v := range sb.envVars {
		out = append(out, k+"="+v)
	}
	for k, v := range envs {
		out = append(out, k+"="+v)
	}
	return out
}

type empty struct{}

// sendSignal serves process.Process/SendSignal.
func (sb *fakeSandbox) sendSignal(req wire.SendSignalRequest) (empty, *rpcError) {
	var term bool
	switch sig := string(req.Signal); sig {
	case `"SIGNAL_SIGKILL"`, "9":
	case `"SIGNAL_SIGTERM"`, "15":
		term = true
	default:
		return empty{}, &rpcError{http.StatusNotImplemented, wire.ConnectUnimplemented, "invalid signal: " + sig}
	}
	sb.mu.Lock()
	p := sb.procs[req.Process.Pid]
	sb.mu.Unlock()
	if p == nil || req.Process.Pid == 0 {
		return empty{}, &rpcError{http.StatusNotFound, wire.ConnectNotFound, fmt.Sprintf("process with pid %d not found", req.Process.Pid)}
	}
	if err := p.kill(term); err != nil {
		return empty{}, &rpcError{http.StatusInternalServerError, wire.ConnectInternal, "error sending signal: " + err.Error()}
	}
	return empty{}, nil
}
