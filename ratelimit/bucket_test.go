package ratelimit_test

import (
	"context"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/ratelimit"
)

// TestBucketNeverExceedsRate: 12 goroutines over 3 NATS connections (as
// separate executors would be) reserve 1 request and 5-15 tokens each, 20
// times. Sorted by their granted start instants, no window ever holds more
// than capacity + rate × window in either dimension.
func TestBucketNeverExceedsRate(t *testing.T) {
	srv := testutil.StartServer(t)
	limit := ratelimit.Limit{RequestsPerMinute: 6000, TokensPerMinute: 60000, Burst: 0.002} // 100 req/s, 1000 tok/s, capacity 12 req, 120 tok
	rules := ratelimit.RateRules{{Provider: "anthropic", Model: "*", Limit: limit}}
	key := ratelimit.RateKey{Provider: "anthropic", KeyID: ratelimit.KeyFingerprint("sk-test"), Model: "claude:test/1"}
	type grant struct {
		at     time.Time
		tokens int
	}
	var mu sync.Mutex
	var grants []grant
	var wg sync.WaitGroup
	for c := 0; c < 3; c++ {
		nc := srv.ConnectAs(t, "executor")
		js, _ := jetstream.New(nc)
		b := ratelimit.NewBucket(js, rules)
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					tok := 5 + rand.IntN(11)
					at, err := b.ReserveAt(context.Background(), key, 1, tok)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					grants = append(grants, grant{at, tok})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	sort.Slice(grants, func(i, j int) bool { return grants[i].at.Before(grants[j].at) })
	reqRate, tokRate := 100.0, 1000.0 // per second
	reqCap, tokCap := 12.0, 120.0
	for i := range grants {
		reqs, toks := 0.0, 0.0
		for j := i; j < len(grants); j++ {
			reqs++
			toks += float64(grants[j].tokens)
			d := grants[j].at.Sub(grants[i].at).Seconds()
			if reqs > reqCap+reqRate*d+1e-6 {
				t.Fatalf("%v requests granted within %.4fs: over capacity %v + %v/s", reqs, d, reqCap, reqRate)
			}
			if toks > tokCap+tokRate*d+1e-3 {
				t.Fatalf("%v tokens granted within %.4fs: over capacity %v + %v/s", toks, d, tokCap, tokRate)
			}
		}
	}
	span := grants[len(grants)-1].at.Sub(grants[0].at)
	t.Logf("%d reservations granted over %s (%.0f req/s; limit 100/s after a burst of 12)", len(grants), span.Round(time.Millisecond), float64(len(grants))/span.Seconds())
}

// TestBucketCorrectCharges: an underestimate reported after the call makes
// the next caller wait for the difference; an unknown model is unlimited.
func TestBucketCorrectCharges(t *testing.T) {
	srv := testutil.StartServer(t)
	rules := ratelimit.RateRules{{Provider: "openai", Model: "gpt-x", Limit: ratelimit.Limit{TokensPerMinute: 6000, Burst: 0.01}}} // 100 tok/s, capacity 60
	b := ratelimit.NewBucket(srv.JS, rules)
	key := ratelimit.RateKey{Provider: "openai", KeyID: "k1", Model: "gpt-x"}
	ctx := context.Background()
	if w, err := b.Reserve(ctx, key, 1, 10); err != nil || w != 0 {
		t.Fatalf("first reserve: wait %v err %v", w, err)
	}
	if err := b.Correct(ctx, key, 10, 160); err != nil {
		t.Fatal(err)
	}
	w, err := b.Reserve(ctx, key, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	// balance ≈ 60 - 10 - 150 - 1 = -101 tokens at 100 tokens/s
	if w < 800*time.Millisecond || w > 1050*time.Millisecond {
		t.Fatalf("wait after a 150-token underestimate is %v, want about 1s", w)
	}
	if w, err := b.Reserve(ctx, ratelimit.RateKey{Provider: "openai", Model: "other"}, 1, 1_000_000); err != nil || w != 0 {
		t.Fatalf("unlimited model: wait %v err %v", w, err)
	}
	if _, ok := rules.Lookup("openai", "gpt-x"); !ok {
		t.Fatal("lookup of an exact rule failed")
	}
}
