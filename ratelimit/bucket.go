package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Limit is a provider rate limit for one API key and model. Zero in a
// dimension means unlimited in it.
type Limit struct {
	RequestsPerMinute int `yaml:"requests_per_minute" json:"requests_per_minute,omitempty"`
	TokensPerMinute   int `yaml:"tokens_per_minute" json:"tokens_per_minute,omitempty"`
	// Burst is the share of a minute's allowance that may be spent at once
	// (the bucket capacity). 0 means DefaultBurst: a full minute, the way
	// providers that use token buckets (Anthropic) count. Use a small value
	// against a provider that counts in sliding 60 s windows: at most
	// Burst+1 minutes' allowance then lands in any minute.
	Burst float64 `yaml:"burst" json:"burst,omitempty"`
}

// DefaultBurst is the bucket capacity in minutes of allowance.
const DefaultBurst = 1.0

// RateRule is one entry of polos.yaml's rate_limits list.
type RateRule struct {
	Provider string `yaml:"provider" json:"provider"`
	Model    string `yaml:"model" json:"model,omitempty"` // "" or "*": every model of the provider
	Limit    `yaml:",inline"`
}

// RateRules resolve the limit of a provider and model: an exact model rule
// wins over a provider-wide one.
type RateRules []RateRule

// Lookup returns the limit for provider and model.
func (rs RateRules) Lookup(provider, model string) (Limit, bool) {
	var wide *Limit
	for i := range rs {
		r := &rs[i]
		if r.Provider != provider {
			continue
		}
		if r.Model == model {
			return r.Limit, true
		}
		if r.Model == "" || r.Model == "*" {
			wide = &r.Limit
		}
	}
	if wide != nil {
		return *wide, true
	}
	return Limit{}, false
}

// RateKey names one shared bucket: a provider API key (by fingerprint, never
// the key itself) and a model.
type RateKey struct {
	Provider string
	KeyID    string // KeyFingerprint of the API key
	Model    string
}

// KeyFingerprint identifies an API key without revealing it.
func KeyFingerprint(apiKey string) string {
	sum := sha256.Sum256([]byte(apiKey))
	return hex.EncodeToString(sum[:6])
}

var plainToken = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// kvToken makes s a KV key token: kept as is when plain, else "=" and
// base64url (never collides with a plain token).
func kvToken(s string) string {
	if plainToken.MatchString(s) {
		return s
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(s))
}

func (k RateKey) kvKey() string {
	return kvToken(k.Provider) + "." + kvToken(k.KeyID) + "." + kvToken(k.Model)
}

func (k RateKey) String() string { return k.Provider + "/" + k.KeyID + "/" + k.Model }

// Bucket spaces provider calls so every caller on every machine sharing a
// key and model stays under its requests-per-minute and tokens-per-minute
// limits. Each (key, model) is a token bucket in the polos_rates KV bucket.
//
// Reserve takes the call's requests and estimated tokens immediately, even
// into debt, and returns how long to wait before calling: the bucket is a
// virtual line, every caller gets its own start time, nobody retries or
// spins, and callers are served in the order they reserved. Correct
// settles the estimate against the reported usage after the call.
//
// Under failure: the state is updated with compare-and-swap; a caller that
// reserved and then died leaves its reservation spent (the bucket refills).
// Times are wall clocks of the callers' machines (keep them synchronised).
type Bucket struct {
	js    jetstream.JetStream
	rules RateRules
	now   func() time.Time

	kv lazyKV
}

// NewBucket returns the rate limiter for rules (from polos.yaml).
func NewBucket(js jetstream.JetStream, rules RateRules) *Bucket {
	return &Bucket{js: js, rules: rules, now: time.Now, kv: lazyKV{js: js, name: protocol.RatesKV}}
}

// bucketState is the stored state: what is available (negative: owed) at At.
type bucketState struct {
	Requests float64 `json:"r"`
	Tokens   float64 `json:"t"`
	At       int64   `json:"at"` // unix nanoseconds
}

type dim struct{ perMinute, burst float64 }

func (d dim) on() bool          { return d.perMinute > 0 }
func (d dim) capacity() float64 { return d.perMinute * d.burst }
func (d dim) perNano() float64  { return d.perMinute / float64(time.Minute) }
func (d dim) refill(v, nanos float64) float64 {
	return math.Min(d.capacity(), v+nanos*d.perNano())
}

// until is how long until an owed amount v (< 0) is paid back.
func (d dim) until(v float64) time.Duration {
	if !d.on() || v >= 0 {
		return 0
	}
	return time.Duration(math.Ceil(-v / d.perNano()))
}

func dims(l Limit) (req, tok dim) {
	burst := l.Burst
	if burst <= 0 {
		burst = DefaultBurst
	}
	return dim{float64(l.RequestsPerMinute), burst}, dim{float64(l.TokensPerMinute), burst}
}

// advance refills st to now (a fresh state starts full).
func advance(st *bucketState, cur []byte, req, tok dim, now time.Time) error {
	if len(cur) == 0 {
		*st = bucketState{Requests: req.capacity(), Tokens: tok.capacity(), At: now.UnixNano()}
		return nil
	}
	if err := json.Unmarshal(cur, st); err != nil {
		return perr.Wrap(err, CodeBadLimit, "delete the key from "+protocol.RatesKV+" (it restarts full)", "rate-limit state is unreadable")
	}
	elapsed := float64(max(now.UnixNano()-st.At, 0))
	st.Requests = req.refill(st.Requests, elapsed)
	st.Tokens = tok.refill(st.Tokens, elapsed)
	st.At = max(st.At, now.UnixNano())
	return nil
}

// Reserve books requests and tokens (estimated input plus output) for a
// call on key and returns how long to wait before making it (0: now). A
// call that needs more tokens than the bucket holds is booked at the
// bucket's capacity, so it waits for a full bucket instead of forever. An
// unknown provider/model (no rule) is not limited.
func (b *Bucket) Reserve(ctx context.Context, key RateKey, requests, tokens int) (time.Duration, error) {
	at, err := b.ReserveAt(ctx, key, requests, tokens)
	if err != nil {
		return 0, err
	}
	return max(time.Until(at), 0), nil
}

// ReserveAt is Reserve returning the instant the call may start.
func (b *Bucket) ReserveAt(ctx context.Context, key RateKey, requests, tokens int) (time.Time, error) {
	l, ok := b.rules.Lookup(key.Provider, key.Model)
	if !ok || (l.RequestsPerMinute <= 0 && l.TokensPerMinute <= 0) {
		return b.now(), nil
	}
	if requests < 0 || tokens < 0 {
		return time.Time{}, perr.New(CodeBadLimit, "pass non-negative requests and tokens", "reserve of %d requests and %d tokens on %s", requests, tokens, key)
	}
	kv, err := b.kv.get(ctx)
	if err != nil {
		return time.Time{}, err
	}
	req, tok := dims(l)
	var start time.Time
	_, err = update(ctx, kv, key.kvKey(), func(cur []byte) ([]byte, error) {
		now := b.now()
		var st bucketState
		if err := advance(&st, cur, req, tok, now); err != nil {
			return nil, err
		}
		if req.on() {
			st.Requests -= math.Min(float64(requests), req.capacity())
		}
		if tok.on() {
			st.Tokens -= math.Min(float64(tokens), tok.capacity())
		}
		start = time.Unix(0, st.At).Add(max(req.until(st.Requests), tok.until(st.Tokens)))
		return json.Marshal(st)
	})
	return start, err
}

// Correct settles a call's token estimate against the usage the provider
// reported: an underestimate is charged (later callers wait longer), an
// overestimate is given back.
func (b *Bucket) Correct(ctx context.Context, key RateKey, estimatedTokens, actualTokens int) error {
	l, ok := b.rules.Lookup(key.Provider, key.Model)
	if !ok || l.TokensPerMinute <= 0 || estimatedTokens == actualTokens {
		return nil
	}
	kv, err := b.kv.get(ctx)
	if err != nil {
		return err
	}
	req, tok := dims(l)
	_, err = update(ctx, kv, key.kvKey(), func(cur []byte) ([]byte, error) {
		var st bucketState
		if err := advance(&st, cur, req, tok, b.now()); err != nil {
			return nil, err
		}
		st.Tokens = math.Min(tok.capacity(), st.Tokens+float64(min(estimatedTokens, int(tok.capacity()))-actualTokens))
		return json.Marshal(st)
	})
	return err
}
