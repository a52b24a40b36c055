package agent_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/polos-run/polos/agent"
	"github.com/polos-run/polos/client"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/llmfake"
	"github.com/polos-run/polos/llm/scripted"
	"github.com/polos-run/polos/ratelimit"
)

// 20 agent runs share one API key. The fake provider accepts 4 requests per
// 2 s window and answers 429 beyond; the shared limiter (1 request/s,
// capacity 1) keeps every executor under it: zero 429s at the fake.
func TestSharedRateLimitKeepsTwentyRunsUnderTheProviderLimit(t *testing.T) {
	e := newEnv(t)
	fake := llmfake.NewAnthropic(scripted.MustParse("r.yaml", "- text: done\n"))
	t.Cleanup(fake.Close)
	fake.SetRateWindow(2 * time.Second)
	fake.SetRateLimit(llmfake.RateLimit{RequestsPerMinute: 4}) // per window
	e.deps.Limiter = ratelimit.NewBucket(e.srv.JS, ratelimit.RateRules{{Provider: "anthropic", Model: "m",
		Limit: ratelimit.Limit{RequestsPerMinute: 60, Burst: 1.0 / 60}}})
	cfg := e.localAgent("limited", llm.ProviderConfig{Provider: "anthropic", Model: "m", BaseURL: fake.URL, APIKey: "shared-key"})
	if err := agent.Register(e.reg, cfg, e.deps); err != nil {
		t.Fatal(err)
	}
	e.startExecutor()
	e.startExecutor()
	var ids []string
	for i := 0; i < 20; i++ {
		id, _, err := e.cl.Start(context.Background(), "limited", "hi", client.StartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	waits := 0
	for _, id := range ids {
		if s := e.result(id); s.Status != events.StatusCompleted {
			t.Fatalf("%s: %s %+v", id, s.Status, s.Error)
		}
		for _, ev := range e.history(id) {
			if ev.Type == events.Annotation && ev.Name == "rate_limit_wait" {
				waits++
			}
		}
	}
	n429 := 0
	for _, r := range fake.Requests() {
		if r.Status == http.StatusTooManyRequests {
			n429++
		}
	}
	if n429 != 0 || fake.RequestCount() != 20 {
		t.Fatalf("%d requests, %d answered 429; want 20 and 0", fake.RequestCount(), n429)
	}
	if waits == 0 {
		t.Fatal("no call waited: the limiter was not exercised")
	}
	t.Logf("20 runs, 0 responses 429, %d calls delayed by the shared limiter", waits)
}
