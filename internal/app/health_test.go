package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/polos-run/polos/health"
	"github.com/polos-run/polos/internal/app"
	"github.com/polos-run/polos/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.RunChildServer()
	os.Exit(m.Run())
}

// TestExecutorRoleAnswersReadiness: `polosd --role executor --http ADDR`
// serves /healthz and /readyz; readiness fails (503, with the failing
// check's code) while the NATS server is stopped or gone, and comes back
// by itself.
func TestExecutorRoleAnswersReadiness(t *testing.T) {
	srv := testutil.StartChildServerProvisioned(t)
	d, err := app.Start(context.Background(), app.Options{Role: app.RoleExecutor, NATSURL: srv.URL, DataDir: srv.Dir, HTTP: "127.0.0.1:0",
		Executors: 1, Out: io.Discard, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	base := d.Ready().HTTPURL
	if base == "" {
		t.Fatal("the executor role did not serve --http")
	}
	get := func(path string) (int, health.Report) {
		c := http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r health.Report
		_ = json.NewDecoder(resp.Body).Decode(&r)
		return resp.StatusCode, r
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	readyIs := func(want int, why string) health.Report {
		t.Helper()
		var rep health.Report
		testutil.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
			code, r := get("/readyz")
			rep = r
			if code != want {
				return fmt.Errorf("/readyz %d, want %d (%s): %+v", code, want, why, r)
			}
			return nil
		})
		return rep
	}
	readyIs(http.StatusOK, "started")
	srv.Pause()
	rep := readyIs(http.StatusServiceUnavailable, "broker stopped")
	failing := ""
	for _, c := range rep.Checks {
		if !c.OK {
			failing += c.Name + ":" + c.Code + " "
		}
	}
	t.Logf("while stopped: %s", failing)
	srv.Resume()
	readyIs(http.StatusOK, "broker continued")
	srv.Kill()
	rep = readyIs(http.StatusServiceUnavailable, "broker killed")
	if rep.Checks[0].Name != "nats" || rep.Checks[0].OK {
		t.Fatalf("the nats check should fail while the broker is gone: %+v", rep.Checks)
	}
	srv.Restart()
	readyIs(http.StatusOK, "broker restarted")
}
