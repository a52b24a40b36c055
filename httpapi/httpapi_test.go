package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/executor"
	"github.com/polos-run/polos/httpapi"
	"github.com/polos-run/polos/internal/testutil"
)

const key = "s3cret"

func setup(t *testing.T) (*httptest.Server, *client.Client) {
	srv := testutil.StartServer(t)
	reg := polos.NewRegistry()
	polos.Register(reg, "ask", func(ctx polos.Context, in string) (string, error) {
		d, err := polos.Suspend[struct{ Approved bool }](ctx, "confirm", map[string]any{"_form": map[string]any{"title": "ok?"}})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s:%v", in, d.Approved), nil
	})
	ex, err := executor.New(srv.NC, srv.JS, reg, executor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ex.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	cl, err := client.New(srv.NC, "default")
	if err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(httpapi.Options{Client: cl, Workflows: reg, APIKey: key})
	api.Mount("/approve/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "mounted") }))
	hs := httptest.NewServer(api)
	t.Cleanup(hs.Close)
	return hs, cl
}

func do(t *testing.T, method, url, body string, auth bool, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if auth {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAPI(t *testing.T) {
	hs, _ := setup(t)
	u := hs.URL
	if c, b := do(t, "GET", u+"/healthz", "", false); c != 200 || !strings.Contains(b, `"ok"`) {
		t.Fatalf("healthz %d %s", c, b)
	}
	if c, _ := do(t, "POST", u+"/v1/runs", `{"workflow":"ask","input":"x"}`, false); c != 401 {
		t.Fatalf("start without key: %d", c)
	}
	if c, b := do(t, "POST", u+"/v1/runs", `{"workflow":"nope"}`, true); c != 404 || !strings.Contains(b, "WORKFLOW_NOT_FOUND") {
		t.Fatalf("unknown workflow: %d %s", c, b)
	}
	if c, _ := do(t, "POST", u+"/v1/runs", `{"workflow":"ask","bogus":1}`, true); c != 400 {
		t.Fatalf("unknown field: %d", c)
	}
	c, b := do(t, "POST", u+"/v1/runs", `{"workflow":"ask","input":"hi","id":"run_http1"}`, true)
	if c != 201 || !strings.Contains(b, `"run_http1"`) {
		t.Fatalf("start: %d %s", c, b)
	}
	if c, _ := do(t, "POST", u+"/v1/runs", `{"workflow":"ask","input":"hi","id":"run_http1"}`, true); c != 200 {
		t.Fatalf("start of an existing ID: %d", c)
	}
	var sum events.Summary
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		_, b := do(t, "GET", u+"/v1/runs/run_http1", "", true)
		_ = json.Unmarshal([]byte(b), &sum)
		if sum.Status != "waiting" {
			return fmt.Errorf("status %s", sum.Status)
		}
		return nil
	})
	if sum.Waiting[0].StepKey != "confirm" {
		t.Fatalf("%+v", sum)
	}
	for _, path := range []string{"/v1/runs", "/v1/runs/run_http1", "/v1/runs/run_http1/events", "/v1/workflows"} {
		if c, _ := do(t, "GET", u+path, "", false); c != 401 {
			t.Fatalf("GET %s without the key: %d, want 401", path, c)
		}
	}
	if c, _ := do(t, "GET", u+"/v1/runs/run_nope", "", true); c != 404 {
		t.Fatalf("unknown run: %d", c)
	}
	// SSE: read the first events, then reconnect with Last-Event-ID.
	req, _ := http.NewRequest("GET", u+"/v1/runs/run_http1/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("sse: %v %v", err, resp)
	}
	var ids []uint64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && len(ids) < 2 {
		if v, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			ids = append(ids, n)
		}
	}
	resp.Body.Close()
	if c, b := do(t, "POST", u+"/v1/runs/run_http1/steps/confirm/resume", `{"data":{"approved":true},"decided_by":"tester"}`, true); c != 200 {
		t.Fatalf("resume: %d %s", c, b)
	}
	if c, b := do(t, "POST", u+"/v1/runs/run_http1/steps/confirm/resume", `{"data":{"approved":false}}`, true); c != 409 {
		t.Fatalf("second resume: %d %s", c, b)
	}
	c, b = do(t, "GET", u+"/v1/runs/run_http1/events", "", true, "Accept", "text/event-stream", "Last-Event-ID", fmt.Sprint(ids[len(ids)-1]))
	if c != 200 {
		t.Fatalf("sse resume %d", c)
	}
	for _, line := range strings.Split(b, "\n") {
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			ids = append(ids, n)
		}
	}
	_, hb := do(t, "GET", u+"/v1/runs/run_http1/events", "", true)
	var hist struct{ Events []events.Event }
	if err := json.Unmarshal([]byte(hb), &hist); err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for _, e := range hist.Events {
		want = append(want, e.Seq)
	}
	if fmt.Sprint(ids) != fmt.Sprint(want) || hist.Events[len(hist.Events)-1].Type != events.RunCompleted {
		t.Fatalf("sse ids %v, history %v", ids, want)
	}
	// The decision records the key that was checked, not the body's claim.
	for _, e := range hist.Events {
		if e.Type == events.Resumed && e.Attr("decided_by") != "http:operator" {
			t.Fatalf("decided_by %q recorded, want http:operator (the body said tester)", e.Attr("decided_by"))
		}
	}
	if c, b := do(t, "POST", u+"/v1/runs/run_http1/cancel", "", true); c != 409 {
		t.Fatalf("cancel of finished run: %d %s", c, b)
	}
	if c, b := do(t, "GET", u+"/v1/runs?status=completed", "", true); c != 200 || !strings.Contains(b, "run_http1") {
		t.Fatalf("list: %d %s", c, b)
	}
	if c, b := do(t, "GET", u+"/approve/x", "", false); c != 200 || b != "mounted" {
		t.Fatalf("mount: %d %s", c, b)
	}
}
