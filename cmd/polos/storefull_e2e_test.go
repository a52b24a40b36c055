package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/internal/testutil"
)

// TestFullDiskIsNamedAndRecoveredByItself: polosd's data directory is on a
// 48 MB tmpfs. Runs are in flight when a file fills the disk: `polos run
// --detach` fails with STORE_FULL (exit 6) well within its timeout instead
// of hanging, polosd's log names the cause once, and after the file is
// deleted every run finishes, with nothing restarted and no acknowledged
// event lost.
func TestFullDiskIsNamedAndRecoveredByItself(t *testing.T) {
	data := testutil.SmallFS(t, "48m")
	dir := t.TempDir()
	var turns []string
	for i := 0; i < 4; i++ {
		turns = append(turns, "- tool_calls:\n    - {name: exec, input: {command: sleep 0.5}}")
	}
	turns = append(turns, "- text: done")
	if err := os.WriteFile(filepath.Join(dir, "script.yaml"), []byte(strings.Join(turns, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`agents:
  - id: sleeper
    provider: scripted
    model: sleeper
    script: %s/script.yaml
    sandbox: {env: local, exec: {security: allowlist, allowlist: ["sleep *"]}}
    tools: [exec]
    stop_conditions: [{max_steps: 20}]
`, dir)
	cfgPath := filepath.Join(dir, "polos.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startPolosd(t, data, "--config", cfgPath)
	start := func() string {
		r := mustOK(t, polos(t, d, "run", "sleeper", "--detach", "-o", "json", "--input", "nap"))
		var v struct{ ID string }
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.ID == "" {
			t.Fatalf("run --detach printed %q", r.stdout)
		}
		return v.ID
	}
	warm := start()
	waitStatus(t, d, warm, events.StatusCompleted)

	// Runs in flight, each with some steps recorded.
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, start())
	}
	before := map[string][]events.Event{}
	testutil.CheckFor(t, waitLong, 50*time.Millisecond, func() error {
		for _, id := range ids {
			if h := history(t, d, id); len(h) < 3 {
				return fmt.Errorf("run %s has %d events", id, len(h))
			}
		}
		return nil
	})
	filler := testutil.FillDisk(t, data)
	for _, id := range append(ids, warm) {
		before[id] = history(t, d, id) // read after the fill: everything acknowledged by now
	}

	// A new run is refused with the coded error, within the CLI's timeout.
	// (A write that fits in a block's last, already allocated page still
	// lands on a full tmpfs: such starts are acknowledged runs like any.)
	var r result
	var took time.Duration
	for i := 0; ; i++ {
		t0 := time.Now()
		r = polos(t, d, "run", "sleeper", "--detach", "-o", "json", "--input", "nap")
		took = time.Since(t0)
		if r.code != 0 || i == 50 {
			break
		}
		var v struct{ ID string }
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.ID == "" {
			t.Fatalf("run --detach printed %q", r.stdout)
		}
		ids = append(ids, v.ID)
	}
	if r.code != 6 || !strings.Contains(r.stderr, "STORE_FULL") || !strings.Contains(r.stderr, "fix:") {
		t.Fatalf("polos run --detach on a full disk after %s: exit %d\nstdout: %s\nstderr: %s\npolosd: %s", took, r.code, r.stdout, r.stderr, d.out)
	}
	if took > 25*time.Second {
		t.Fatalf("polos run --detach took %s to fail on a full disk", took)
	}
	t.Logf("full disk: polos run --detach exit %d after %s: %s", r.code, took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
	// Again: refused at once now that polosd knows.
	t1 := time.Now()
	if r := polos(t, d, "run", "sleeper", "--detach", "--input", "nap"); r.code != 6 {
		t.Fatalf("second run on a full disk: exit %d %s", r.code, r.stderr)
	}
	t.Logf("second refusal after %s; %d runs started on the full disk before the first refusal", time.Since(t1).Round(time.Millisecond), len(ids)-3)
	// The HTTP API names it too: 507 with the code.
	key, err := os.ReadFile(d.ready.HTTPKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", d.ready.HTTPURL+"/v1/runs", strings.NewReader(`{"workflow":"sleeper","input":"nap"}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInsufficientStorage || !strings.Contains(string(body), `"STORE_FULL"`) {
		t.Fatalf("POST /v1/runs on a full disk: %d %s", resp.StatusCode, body)
	}
	time.Sleep(5 * time.Second) // the disk stays full a while: the cause must still be logged once
	if n := strings.Count(d.out.String(), "no space left on device"); n != 1 {
		t.Fatalf("polosd's log names the cause %d times, want once:\n%s", n, d.out)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	for _, id := range ids {
		waitStatus(t, d, id, events.StatusCompleted)
	}
	t.Logf("in-flight runs completed %s after space was freed", time.Since(freed).Round(time.Millisecond))
	after := start()
	waitStatus(t, d, after, events.StatusCompleted)
	if !strings.Contains(d.out.String(), "store recovered") {
		t.Fatalf("polosd did not log the recovery:\n%s", d.out)
	}
	if d.exited() {
		t.Fatal("polosd exited")
	}
	for id, old := range before {
		now := history(t, d, id)
		if len(now) < len(old) {
			t.Fatalf("run %s: %d events before, %d after", id, len(old), len(now))
		}
		for i, e := range old {
			n := now[i]
			if n.Seq != e.Seq || n.Type != e.Type || n.Pos != e.Pos || n.Name != e.Name || string(n.Data) != string(e.Data) {
				t.Fatalf("run %s event %d changed: %+v then %+v", id, i, e, n)
			}
		}
	}
}

// exited reports whether polosd has exited.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}
