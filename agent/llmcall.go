package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/ratelimit"
)

// callLLM makes turn's LLM call in a recorded step, after the budget and
// rate-limit waits; a replay returns the recorded response and pays nothing.
func (r *runState) callLLM(turn int, msgs []llm.Message) (LLMCall, error) {
	req := llm.Request{Model: r.cfg.Provider.Model, System: r.cfg.SystemPrompt, Messages: trimHistory(msgs, r.historyLimit()), MaxTokens: r.cfg.MaxTokens}
	if req.MaxTokens == 0 {
		req.MaxTokens = DefaultMaxResponseTokens
	}
	for _, name := range r.cfg.tools() {
		if ct, ok := r.cfg.custom(name); ok {
			req.Tools = append(req.Tools, ct.Tool)
			continue
		}
		req.Tools = append(req.Tools, builtinTools[name].Def)
	}
	runID := r.ctx.RunID()
	est := llm.EstimateTokens(req) + int64(min(req.MaxTokens, DefaultOutputEstimate))
	if err := r.waitForBudget(turn, est); err != nil {
		return LLMCall{}, err
	}
	key := r.rateKey()
	r.waitForRate(turn, key, est)
	return polos.Step(r.ctx, fmt.Sprintf("llm:%d", turn), func(c context.Context, _ string) (LLMCall, error) {
		var onDelta func(llm.Delta)
		if r.deps.Stream != nil {
			onDelta = func(d llm.Delta) { r.deps.Stream(runID, StreamDelta{RunID: runID, Turn: turn, Text: d.Text}) }
		}
		t0 := time.Now()
		resp, err := r.model.Generate(c, req, onDelta)
		if err != nil {
			return LLMCall{}, err
		}
		call := LLMCall{Response: resp, RequestDigest: llm.RequestDigest(req), Model: req.Model,
			LatencyMs: time.Since(t0).Milliseconds(), CostUSD: Cost(req.Model, resp.Usage)}
		used := resp.Usage.InputTokens + resp.Usage.OutputTokens + resp.Usage.CacheReadTokens + resp.Usage.CacheWriteTokens
		if r.deps.Limiter != nil {
			_ = r.deps.Limiter.Correct(c, key, int(est), int(used))
		}
		if r.deps.Budget != nil {
			_ = r.deps.Budget.Add(c, ratelimit.ScopesOf(runID, r.cfg.ID), ratelimit.Usage{Tokens: used, Cost: call.CostUSD})
		}
		return call, nil
	}, polos.WithRetry(llmRetryPolicy), polos.Idempotent())
}

// DefaultOutputEstimate is the output tokens assumed for a call before it
// is made (rate limits and budgets are corrected from the reported usage).
const DefaultOutputEstimate = 512

func (r *runState) rateKey() ratelimit.RateKey {
	apiKey := r.cfg.Provider.APIKey
	if apiKey == "" {
		apiKey = r.cfg.Provider.Provider // keys from the environment share one bucket per provider
	}
	return ratelimit.RateKey{Provider: r.cfg.Provider.Provider, KeyID: ratelimit.KeyFingerprint(apiKey), Model: r.cfg.Provider.Model}
}

// waitForRate books the call in the shared token bucket (a recorded step)
// and, if the bucket says so, sleeps durably first; the wait shows in
// `polos tail` as a rate_limit_wait annotation. Calls are delayed, never
// failed.
func (r *runState) waitForRate(turn int, key ratelimit.RateKey, est int64) {
	if r.deps.Limiter == nil {
		return
	}
	waitMs, err := polos.Step(r.ctx, fmt.Sprintf("ratelimit:%d", turn), func(c context.Context, _ string) (int64, error) {
		d, err := r.deps.Limiter.Reserve(c, key, 1, int(est))
		return d.Milliseconds(), err
	}, polos.Idempotent())
	if err != nil || waitMs <= 0 {
		return
	}
	_ = r.ctx.Annotate("rate_limit_wait", map[string]string{"wait_ms": fmt.Sprint(waitMs), "key": key.String()})
	_ = r.ctx.Sleep(time.Duration(waitMs) * time.Millisecond)
}

// waitForBudget pauses the run (a suspend with a `_source: budget` form)
// while the call would cross a run, agent or namespace budget; `polos
// budget set` raises the budget and resumes it. It re-checks after each
// resume.
func (r *runState) waitForBudget(turn int, est int64) error {
	if r.deps.Budget == nil {
		return nil
	}
	scopes := ratelimit.ScopesOf(r.ctx.RunID(), r.cfg.ID)
	for attempt := 0; ; attempt++ {
		form, err := polos.Step(r.ctx, fmt.Sprintf("budget:%d", turn), func(c context.Context, _ string) (json.RawMessage, error) {
			err := r.deps.Budget.Check(c, scopes, ratelimit.Usage{Tokens: est, Cost: Cost(r.cfg.Provider.Model, llm.Usage{InputTokens: est})})
			if ex, ok := ratelimit.ExceededOf(err); ok {
				return ratelimit.BudgetForm(ex), nil
			}
			return nil, err
		}, polos.Idempotent())
		if err != nil {
			return err
		}
		if len(form) == 0 || string(form) == "null" {
			return nil
		}
		if _, err := r.ctx.Suspend(fmt.Sprintf("budget-%d-%d", turn, attempt), form); err != nil {
			return err
		}
	}
}

// llmRetryPolicy retries transient provider errors (429, 5xx, timeouts),
// honouring Retry-After; every attempt is a step_failed event.
var llmRetryPolicy = polos.RetryPolicy{
	MaxAttempts: DefaultLLMAttempts, InitialInterval: DefaultLLMInitialBackoff, Multiplier: 2, MaxInterval: DefaultLLMMaxBackoff,
	Retryable: func(err error) bool {
		var ae *llm.APIError
		if errors.As(err, &ae) {
			return ae.Retryable
		}
		return false
	},
	RetryAfter: func(err error) time.Duration {
		var ae *llm.APIError
		if errors.As(err, &ae) {
			return ae.RetryAfter
		}
		return 0
	},
}

func (r *runState) historyLimit() int {
	if r.cfg.ConversationHistory > 0 {
		return r.cfg.ConversationHistory
	}
	return DefaultConversationHistory
}

// trimHistory keeps the first user message and the last `limit` messages,
// never separating an assistant tool call from its tool results: the cut
// moves forward until it starts at a user or assistant message that does
// not answer an earlier call.
func trimHistory(msgs []llm.Message, limit int) []llm.Message {
	if len(msgs) <= limit+1 {
		return msgs
	}
	cut := len(msgs) - limit
	for cut < len(msgs) && msgs[cut].Role == llm.RoleTool {
		cut++
	}
	out := append([]llm.Message{msgs[0]}, msgs[cut:]...)
	return out
}

// Cost estimates a call's cost in USD from public list prices per million
// tokens (input, output, cache read, cache write). Unknown models cost 0.
func Cost(model string, u llm.Usage) float64 {
	type price struct{ in, out, cacheRead, cacheWrite float64 }
	prices := map[string]price{
		"claude-sonnet-4-5": {3, 15, 0.30, 3.75},
		"claude-opus-4-1":   {15, 75, 1.50, 18.75},
		"claude-haiku-4-5":  {1, 5, 0.10, 1.25},
		"gpt-4o":            {2.5, 10, 1.25, 0},
		"gpt-4o-mini":       {0.15, 0.6, 0.075, 0},
	}
	p, ok := prices[model]
	if !ok {
		return 0
	}
	return (float64(u.InputTokens)*p.in + float64(u.OutputTokens)*p.out +
		float64(u.CacheReadTokens)*p.cacheRead + float64(u.CacheWriteTokens)*p.cacheWrite) / 1e6
}
