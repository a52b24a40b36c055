package main_test

// End-to-end tests: real polosd and polos processes, built once in
// TestMain, talking over real NATS on random ports in temp dirs.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/app"
	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "polos-e2e-bin-")
	if err != nil {
		panic(err)
	}
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/polos-run/polos/cmd/polos", "github.com/polos-run/polos/cmd/polosd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const waitLong = 90 * time.Second // generous: a noisy 2-core VM

// daemon is a polosd process.
type daemon struct {
	t       *testing.T
	cmd     *exec.Cmd
	dataDir string
	ready   app.Ready
	out     *syncBuf
	done    chan struct{}
	exitErr error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startPolosd starts polosd on dataDir with random ports and waits for its
// ready file.
func startPolosd(t *testing.T, dataDir string, extra ...string) *daemon {
	t.Helper()
	return startPolosdEnv(t, dataDir, nil, extra...)
}

// startPolosdEnv is startPolosd with env added to polosd's environment.
func startPolosdEnv(t *testing.T, dataDir string, env []string, extra ...string) *daemon {
	t.Helper()
	readyFile := filepath.Join(t.TempDir(), "ready.json")
	args := append([]string{"--data-dir", dataDir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--executors", "2", "--ready-file", readyFile, "--log-level", "warn"}, extra...)
	d := &daemon{t: t, dataDir: dataDir, out: &syncBuf{}, done: make(chan struct{})}
	d.cmd = exec.Command(filepath.Join(binDir, "polosd"), args...)
	d.cmd.Env = append(cleanEnv(), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exitErr = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop() })
	testutil.CheckFor(t, waitLong, 20*time.Millisecond, func() error {
		select {
		case <-d.done:
			t.Fatalf("polosd exited before ready: %v\n%s", d.exitErr, d.out)
		default:
		}
		b, err := os.ReadFile(readyFile)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &d.ready)
	})
	return d
}

// stop sends SIGTERM and checks polosd exits 0.
func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if d.exitErr != nil {
			d.t.Errorf("polosd exit after SIGTERM: %v\n%s", d.exitErr, d.out)
		}
	case <-time.After(waitLong):
		_ = d.cmd.Process.Kill()
		d.t.Errorf("polosd did not stop after SIGTERM\n%s", d.out)
	}
}

// kill9 kills polosd without a chance to clean up.
func (d *daemon) kill9() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POLOS_") {
			env = append(env, kv)
		}
	}
	return env
}

type result struct {
	stdout, stderr string
	code           int
}

// polos runs the CLI against d (nil: no server configured).
func polos(t *testing.T, d *daemon, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "polos"), args...)
	cmd.Env = cleanEnv()
	if d != nil {
		cmd.Env = append(cmd.Env, "POLOS_NATS_URL="+d.ready.NATSURL, "POLOS_DATA_DIR="+d.dataDir)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustOK(t *testing.T, r result) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r
}

func startDemo(t *testing.T, d *daemon, input string) string {
	t.Helper()
	r := mustOK(t, polos(t, d, "run", "demo", "--detach", "-o", "json", "--input", input))
	var v struct{ ID string }
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.ID == "" {
		t.Fatalf("run --detach -o json printed %q", r.stdout)
	}
	return v.ID
}

func status(t *testing.T, d *daemon, id string) events.Summary {
	t.Helper()
	var s events.Summary
	r := mustOK(t, polos(t, d, "status", id, "-o", "json"))
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("status -o json: %v: %s", err, r.stdout)
	}
	return s
}

func waitStatus(t *testing.T, d *daemon, id, want string) events.Summary {
	t.Helper()
	var s events.Summary
	testutil.CheckFor(t, waitLong, 50*time.Millisecond, func() error {
		s = status(t, d, id)
		if s.Status != want {
			return fmt.Errorf("run %s is %s, want %s", id, s.Status, want)
		}
		return nil
	})
	return s
}

func history(t *testing.T, d *daemon, id string) []events.Event {
	t.Helper()
	r := mustOK(t, polos(t, d, "history", id, "-o", "json"))
	var hist []struct {
		events.Event
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &hist); err != nil {
		t.Fatalf("history -o json: %v", err)
	}
	out := make([]events.Event, len(hist))
	for i, h := range hist {
		out[i] = h.Event
		out[i].Data = h.Data
	}
	return out
}

// TestStartApproveComplete: polos run follows the demo live, the approval
// is given with polos resume (no step key: exactly one waits), the run
// completes and polos result gives its result.
func TestStartApproveComplete(t *testing.T) {
	d := startPolosd(t, t.TempDir())
	cmd := exec.Command(filepath.Join(binDir, "polos"), "run", "demo", "-o", "jsonl", "--input", `{"delay_ms": -1}`)
	cmd.Env = append(cleanEnv(), "POLOS_NATS_URL="+d.ready.NATSURL, "POLOS_DATA_DIR="+d.dataDir)
	stdout, _ := cmd.StdoutPipe()
	var stderr syncBuf
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan events.Event, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e events.Event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				lines <- e
			}
		}
		close(lines)
	}()
	var id string
	var seen []events.Type
	for e := range lines {
		seen = append(seen, e.Type)
		id = e.RunID
		if e.Type == events.Suspended {
			break
		}
	}
	if id == "" {
		t.Fatalf("polos run printed no events; stderr: %s", stderr.String())
	}
	s := waitStatus(t, d, id, "waiting")
	if len(s.Waiting) != 1 || s.Waiting[0].StepKey != "approve-exec" || s.Waiting[0].Kind != "suspend" || !strings.Contains(string(s.Waiting[0].Form), `"_form"`) {
		t.Fatalf("waiting: %+v", s.Waiting)
	}
	if s.Agent != "demo" || s.CreatedAt.IsZero() || s.UpdatedAt.IsZero() {
		t.Fatalf("summary: %+v", s)
	}
	if !strings.Contains(stderr.String(), "polos resume "+id+" approve-exec --approve") {
		t.Fatalf("not on a terminal, polos run should print the resume command; stderr: %s", stderr.String())
	}
	r := mustOK(t, polos(t, d, "resume", id, "--approve", "--feedback", "go ahead"))
	if !strings.Contains(r.stdout, "approved") {
		t.Fatalf("resume output: %s", r.stdout)
	}
	for e := range lines {
		seen = append(seen, e.Type)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("polos run: %v; stderr: %s", err, stderr.String())
	}
	if seen[len(seen)-1] != events.RunCompleted {
		t.Fatalf("polos run ended on %v", seen)
	}
	r = mustOK(t, polos(t, d, "result", id, "--timeout", "60s", "-o", "json"))
	var res struct {
		Status string
		Result struct {
			Approved bool
			Feedback string
			Exec     struct {
				ExitCode int    `json:"exit_code"`
				Stdout   string `json:"stdout"`
			}
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != "completed" || !res.Result.Approved || res.Result.Feedback != "go ahead" || res.Result.Exec.ExitCode != 0 || !strings.Contains(res.Result.Exec.Stdout, "hello from the Polos sandbox") {
		t.Fatalf("result: %s", r.stdout)
	}
	// Text result prints the result for people.
	if r := mustOK(t, polos(t, d, "result", id)); !strings.Contains(r.stdout, `"answer": "Done`) {
		t.Fatalf("text result: %s", r.stdout)
	}
	// list finds it, with filters.
	r = mustOK(t, polos(t, d, "list", "--status", "completed", "--agent", "demo", "-o", "json"))
	if !strings.Contains(r.stdout, id) {
		t.Fatalf("list: %s", r.stdout)
	}
	if r := mustOK(t, polos(t, d, "list", "--status", "waiting", "-o", "json")); strings.Contains(r.stdout, id) {
		t.Fatalf("list --status waiting shows a completed run: %s", r.stdout)
	}
}

// TestRejectFailsNothing: a rejection with feedback reaches the workflow;
// cancel of a waiting run ends it and polos result exits 1.
func TestRejectAndCancel(t *testing.T) {
	d := startPolosd(t, t.TempDir())
	id := startDemo(t, d, `{"delay_ms": -1}`)
	waitStatus(t, d, id, "waiting")
	mustOK(t, polos(t, d, "resume", id, "approve-exec", "--reject", "--feedback", "use printf"))
	r := mustOK(t, polos(t, d, "result", id, "-o", "json", "--timeout", "60s"))
	if !strings.Contains(r.stdout, `"approved": false`) || !strings.Contains(r.stdout, "use printf") {
		t.Fatalf("result: %s", r.stdout)
	}
	id2 := startDemo(t, d, `{"delay_ms": -1}`)
	waitStatus(t, d, id2, "waiting")
	mustOK(t, polos(t, d, "cancel", id2))
	if r := polos(t, d, "result", id2, "--timeout", "60s"); r.code != 1 || !strings.Contains(r.stdout, "cancelled") {
		t.Fatalf("result of a cancelled run: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if r := polos(t, d, "cancel", id2); r.code != 4 {
		t.Fatalf("cancel of a cancelled run: exit %d", r.code)
	}
}

// TestKill9 kills polosd (and its embedded NATS) twice while a step is in
// flight, restarts it on the same data dir, and checks the run completes
// with no completed step executed twice and the tool run once.
func TestKill9(t *testing.T) {
	dataDir := t.TempDir()
	d := startPolosd(t, dataDir)
	id := startDemo(t, d, `{"delay_ms": 2000, "command": "echo ran >> count.txt; cat count.txt"}`)
	inFlight := func(d *daemon, name string) {
		testutil.CheckFor(t, waitLong, 20*time.Millisecond, func() error {
			for _, e := range history(t, d, id) {
				if e.Type == events.StepStarted && e.Name == name {
					return nil
				}
			}
			return fmt.Errorf("step %s not started yet", name)
		})
	}
	inFlight(d, "llm:1")
	d.kill9()

	d = startPolosd(t, dataDir)
	waitStatus(t, d, id, "waiting")
	mustOK(t, polos(t, d, "resume", id, "--approve"))
	inFlight(d, "llm:3")
	d.kill9()

	d = startPolosd(t, dataDir)
	r := mustOK(t, polos(t, d, "result", id, "--timeout", "90s", "-o", "json"))
	if !strings.Contains(r.stdout, `"status": "completed"`) {
		t.Fatalf("result: %s", r.stdout)
	}
	hist := history(t, d, id)
	completed := map[int]int{}
	completedAt := map[int]int{}
	uncertain := 0
	for i, e := range hist {
		switch e.Type {
		case events.StepCompleted:
			completed[e.Pos]++
			completedAt[e.Pos] = i
		case events.StepUncertain:
			uncertain++
		}
	}
	for pos, n := range completed {
		if n != 1 {
			t.Errorf("step at position %d completed %d times", pos, n)
		}
	}
	for i, e := range hist {
		if e.Type == events.StepStarted {
			if at, ok := completedAt[e.Pos]; ok && at < i {
				t.Errorf("step %s (pos %d) started again after it completed", e.Name, e.Pos)
			}
		}
	}
	if uncertain < 2 {
		t.Errorf("expected the two steps in flight at the kills to be marked uncertain, got %d", uncertain)
	}
	count, err := os.ReadFile(filepath.Join(dataDir, "workspaces", id, "count.txt"))
	if err != nil || strings.Count(string(count), "ran") != 1 {
		t.Fatalf("the sandboxed tool ran %q times (err %v)", count, err)
	}
}

// TestTailFromSeq follows a run, disconnects mid-run, and resumes from the
// last sequence seen: the two parts together are exactly the history.
func TestTailFromSeq(t *testing.T) {
	d := startPolosd(t, t.TempDir())
	id := startDemo(t, d, `{"delay_ms": 200}`)

	cmd := exec.Command(filepath.Join(binDir, "polos"), "tail", id, "--follow", "-o", "jsonl")
	cmd.Env = append(cleanEnv(), "POLOS_NATS_URL="+d.ready.NATSURL, "POLOS_DATA_DIR="+d.dataDir)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var first []uint64
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var e events.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("tail line %q: %v", sc.Text(), err)
		}
		first = append(first, e.Seq)
		if e.Type == events.Suspended {
			break
		}
	}
	_ = cmd.Process.Kill() // the disconnect
	_ = cmd.Wait()
	if len(first) < 3 {
		t.Fatalf("tail saw %v", first)
	}
	mustOK(t, polos(t, d, "resume", id, "--approve"))
	last := first[len(first)-1]
	r := mustOK(t, polos(t, d, "tail", id, "--from-seq", fmt.Sprint(last), "--follow", "-o", "jsonl"))
	var second []uint64
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var e events.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("tail line %q: %v", l, err)
		}
		second = append(second, e.Seq)
	}
	var want []uint64
	for _, e := range history(t, d, id) {
		want = append(want, e.Seq)
	}
	got := append(append([]uint64{}, first...), second...)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tail before and after the disconnect:\n got %v\nwant %v", got, want)
	}
	// Without --follow, tail prints what exists and stops; --all includes the run.
	r = mustOK(t, polos(t, d, "tail", id, "--from-seq", fmt.Sprint(want[1]), "-o", "jsonl"))
	if n := strings.Count(strings.TrimSpace(r.stdout), "\n") + 1; n != len(want)-2 {
		t.Fatalf("tail --from-seq %d printed %d events, want %d", want[1], n, len(want)-2)
	}
	r = mustOK(t, polos(t, d, "tail", "--all"))
	if !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "completed") {
		t.Fatalf("tail --all: %s", r.stdout)
	}
	// --all spans every run partition; resuming from the cursor printed
	// with an event prints exactly the events that followed it.
	for i := 0; i < 2; i++ {
		waitStatus(t, d, startDemo(t, d, `{"delay_ms": -1}`), "waiting")
	}
	all := tailAllJSONL(t, d)
	if len(all) < 6 {
		t.Fatalf("tail --all printed %d events", len(all))
	}
	// Events of one stored message (a step completion riding on the next
	// event) share its cursor and are printed together: resume after the
	// last of them.
	mid := len(all) / 2
	for mid+2 < len(all) && all[mid+1].Cursor == all[mid].Cursor {
		mid++
	}
	resumed := tailAllJSONL(t, d, "--from-cursor", all[mid].Cursor)
	key := func(es []events.Event) []string {
		var out []string
		for _, e := range es {
			out = append(out, fmt.Sprintf("%s/%d", e.RunID, e.Seq))
		}
		sort.Strings(out)
		return out
	}
	if fmt.Sprint(key(resumed)) != fmt.Sprint(key(all[mid+1:])) {
		t.Fatalf("tail --all --from-cursor %s:\n got %v\nwant %v", all[mid].Cursor, key(resumed), key(all[mid+1:]))
	}
	if r := polos(t, d, "tail", "--all", "--from-seq", "3"); r.code != 2 || !strings.Contains(r.stderr, "--from-cursor") {
		t.Fatalf("tail --all --from-seq: want usage error naming --from-cursor, got %d %s", r.code, r.stderr)
	}
}

// tailAllJSONL runs `polos tail --all -o jsonl` (plus args) and decodes it.
func tailAllJSONL(t *testing.T, d *daemon, args ...string) []events.Event {
	t.Helper()
	r := mustOK(t, polos(t, d, append([]string{"tail", "--all", "-o", "jsonl"}, args...)...))
	var out []events.Event
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if l == "" {
			continue
		}
		var e events.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Cursor == "" {
			t.Fatalf("tail --all line %q: %v (every event carries a cursor)", l, err)
		}
		out = append(out, e)
	}
	return out
}

// TestBadInput checks the documented exit codes.
func TestBadInput(t *testing.T) {
	d := startPolosd(t, t.TempDir())
	for _, args := range [][]string{{"status", "run_nope"}, {"result", "run_nope"}, {"history", "run_nope"},
		{"resume", "run_nope", "--approve"}, {"cancel", "run_nope"}, {"tail", "run_nope"}} {
		if r := polos(t, d, args...); r.code != 3 || !strings.Contains(r.stderr, "RUN_NOT_FOUND") {
			t.Errorf("%v: exit %d, stderr %q; want 3", args, r.code, r.stderr)
		}
	}

	id := startDemo(t, d, `{"delay_ms": -1}`)
	waitStatus(t, d, id, "waiting")
	before := len(history(t, d, id))
	// A step that is not waiting.
	if r := polos(t, d, "resume", id, "no-such-step", "--approve"); r.code != 4 || !strings.Contains(r.stderr, "STEP_NOT_WAITING") {
		t.Fatalf("resume of a step that is not waiting: exit %d: %s", r.code, r.stderr)
	}
	// Malformed --data is a usage error, checked before anything is sent.
	for _, data := range []string{`{bad`, `[1,2]`, `"approved"`, `{"a":1} trailing`} {
		if r := polos(t, d, "resume", id, "approve-exec", "--data", data); r.code != 2 {
			t.Fatalf("--data %s: exit %d: %s", data, r.code, r.stderr)
		}
	}
	if r := polos(t, d, "resume", id, "--approve", "--reject"); r.code != 2 {
		t.Fatalf("--approve --reject: exit %d", r.code)
	}
	if n := len(history(t, d, id)); n != before {
		t.Fatalf("refused resumes changed the history: %d -> %d events", before, n)
	}
	// Decide once; a second decision is refused and changes nothing.
	mustOK(t, polos(t, d, "resume", id, "approve-exec", "--data", `{"approved": true, "feedback": "data"}`, "--feedback", "flag wins"))
	after := history(t, d, id)
	if r := polos(t, d, "resume", id, "approve-exec", "--reject"); r.code != 4 || !(strings.Contains(r.stderr, "ALREADY_DECIDED") || strings.Contains(r.stderr, "RUN_FINISHED")) {
		t.Fatalf("second decision: exit %d: %s", r.code, r.stderr)
	}
	r := mustOK(t, polos(t, d, "result", id, "-o", "json", "--timeout", "60s"))
	if !strings.Contains(r.stdout, `"feedback": "flag wins"`) {
		t.Fatalf("flag should win over --data: %s", r.stdout)
	}
	final := history(t, d, id)
	decisions := 0
	for _, e := range final {
		if e.Type == events.Resumed {
			decisions++
		}
	}
	if decisions != 1 || len(final) < len(after) {
		t.Fatalf("history has %d decisions", decisions)
	}
	if r := polos(t, d, "resume", id, "--approve"); r.code != 4 {
		t.Fatalf("resume of a finished run without a key: exit %d", r.code)
	}
	// Usage errors.
	for _, args := range [][]string{{"status"}, {"status", "a", "b"}, {"list", "--status", "sleeping"}, {"status", "x", "-o", "yaml"},
		{"run"}, {"resume", id}, {"tail"}, {"status", "--nope", "x"}} {
		if r := polos(t, d, args...); r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, r.code, r.stderr)
		}
	}
	// Unreachable server: exit 5 and how to start one.
	r = polos(t, nil, "status", id, "--server", "nats://127.0.0.1:1")
	if r.code != 5 || !strings.Contains(r.stderr, "polosd") {
		t.Fatalf("unreachable: exit %d: %s", r.code, r.stderr)
	}
	r = polos(t, nil, "list")
	if r.code != 5 && r.code != 0 { // a developer's own polosd may be on the default port
		t.Fatalf("list against the default server: exit %d: %s", r.code, r.stderr)
	}
}

// TestPolosdStartup: a broken config is reported with file:line before
// anything starts; a second polosd on a locked data dir names the holder.
func TestPolosdStartup(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "polos.yaml")
	if err := os.WriteFile(cfg, []byte("agents:\n  - id: a\n    provider: gemini\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(binDir, "polosd"), "--config", cfg, "--data-dir", filepath.Join(dir, "data")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), cfg+":3:15") || !strings.Contains(string(out), `unknown provider "gemini"`) {
		t.Fatalf("broken config: %v: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Fatal("polosd created its data dir before rejecting the config")
	}

	dataDir := t.TempDir()
	d := startPolosd(t, dataDir)
	out, err = exec.Command(filepath.Join(binDir, "polosd"), "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--http", "off").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), fmt.Sprintf("pid %d", d.ready.PID)) {
		t.Fatalf("second polosd on a locked data dir: %v: %s", err, out)
	}
	d.stop()
	if !strings.Contains(d.out.String(), "polosd: stopped") {
		t.Fatalf("polosd output: %s", d.out)
	}
}

// TestClusterRoles: a server-only polosd, plus an executor-only and a
// sandbox-only polosd joining it over --nats-url, run the demo.
func TestClusterRoles(t *testing.T) {
	srv := startPolosd(t, t.TempDir(), "--role", "server")
	if srv.ready.Executors != 0 || len(srv.ready.Providers) != 0 {
		t.Fatalf("server role runs executors or a sandbox host: %+v", srv.ready)
	}
	work := t.TempDir()
	credsOf := func(role string) string { return filepath.Join(srv.ready.CredsDir, "default", role+".nk") }
	ex := startPolosd(t, work, "--role", "executor", "--nats-url", srv.ready.NATSURL, "--nats-creds", credsOf("executor"))
	// The sandbox host allows workspaces under its own data directory (and
	// those polos.yaml names): the executor's default workspaces are under
	// its data directory, so both use the same path.
	sb := startPolosd(t, work, "--role", "sandbox", "--nats-url", srv.ready.NATSURL, "--nats-creds", credsOf("sandbox"))
	if ex.ready.Executors != 2 || len(sb.ready.Providers) == 0 {
		t.Fatalf("roles: executor %+v sandbox %+v", ex.ready, sb.ready)
	}
	id := startDemo(t, srv, `{"delay_ms": -1}`)
	waitStatus(t, srv, id, "waiting")
	mustOK(t, polos(t, srv, "resume", id, "--approve"))
	r := mustOK(t, polos(t, srv, "result", id, "-o", "json", "--timeout", "60s"))
	if !strings.Contains(r.stdout, "hello from the Polos sandbox") {
		t.Fatalf("result: %s", r.stdout)
	}
}

// TestSubjectsContract: a plain NATS client (no Polos code) with the
// observer credentials sees approval requests on
// polos.*.run.*.*.suspended, as docs/subjects.md says, in the partition
// protocol.RunPartition computes.
func TestSubjectsContract(t *testing.T) {
	d := startPolosd(t, t.TempDir())
	observer, err := nats.NkeyOptionFromSeed(filepath.Join(d.ready.CredsDir, "default", "observer.nk"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(d.ready.NATSURL, observer)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("polos.*.run.*.*.suspended")
	if err != nil {
		t.Fatal(err)
	}
	id := startDemo(t, d, `{"delay_ms": -1}`)
	msg, err := sub.NextMsg(waitLong)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != fmt.Sprintf("polos.default.run.%d.%s.suspended", protocol.RunPartition(id), id) || len(msg.Data) < 2 || msg.Data[0] != 'P' || msg.Data[1] < 1 || msg.Data[1] > events.FormatVersion {
		t.Fatalf("subject %s, payload % x", msg.Subject, msg.Data[:min(8, len(msg.Data))])
	}
	e, err := events.Decode(msg.Data)
	if err != nil || e.Key != "approve-exec" || !strings.Contains(string(e.Data), "_form") {
		t.Fatalf("decoded %+v %v", e, err)
	}
}
