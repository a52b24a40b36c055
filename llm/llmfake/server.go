// Package llmfake runs local HTTP servers that speak the real Anthropic
// Messages and OpenAI Chat Completions wire formats, so the real SDK clients
// can be tested offline: plain JSON and SSE streaming answers, tool use,
// stop reasons, usage with cache tokens, errors with Retry-After, and rate
// limits.
//
// A fake answers from a scripted.Script (the same YAML format as the
// scripted model), as a pure function of the request: the answer to a
// request holding i assistant turns is entry i. It records every request it
// receives, decoded back into an llm.Request, so tests can assert on what a
// client really sent.
//
// The fake checks what the real APIs check and a client is likely to get
// wrong (auth header present, every tool call answered by a tool result in
// the next message, no empty text blocks, at most 4 cache_control markers)
// and answers 400 in the provider's error format otherwise.
package llmfake

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"time"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/scripted"
)

// RateWindow is the window rate limits are counted over (the providers
// publish per-minute limits).
const RateWindow = time.Minute

// Failure describes an error answer the fake gives instead of the script.
type Failure struct {
	Status     int           // HTTP status: 429, 500, 529, 400...
	RetryAfter time.Duration // sent as Retry-After (seconds, rounded up) and retry-after-ms; 0 sends neither
	Message    string        // error message; a default per status when empty
	// MidStream, for a streaming request, answers 200, starts the message and
	// then fails inside the stream (Anthropic: an "error" event; OpenAI: an
	// error object in a data line). Plain requests fail normally.
	MidStream bool
}

// RateLimit caps what the fake accepts per RateWindow; 0 means unlimited.
// Beyond a limit the fake answers 429 with Retry-After set to when enough of
// the window has passed. Tokens count each accepted request's input tokens
// (estimated, or as scripted) plus its output tokens; a request is refused
// when the tokens already in the window plus its own input would exceed the
// limit.
type RateLimit struct {
	RequestsPerMinute int
	TokensPerMinute   int64
}

// Recorded is one request the fake received.
type Recorded struct {
	Time    time.Time
	Method  string
	Path    string
	Header  http.Header
	Body    []byte
	Stream  bool        // the request asked for SSE streaming
	Request llm.Request // Body decoded into the provider-neutral form (zero if it did not decode)
	Status  int         // the status the fake answered with (200 even when failing mid-stream)
}

// flavor is what differs between the two wire formats.
type flavor interface {
	name() string
	// route reports whether method and path are the endpoint.
	route(method, path string) bool
	// authorized reports whether the request carries credentials.
	authorized(h http.Header) bool
	// decode parses and validates a request body.
	decode(body []byte) (decoded, error)
	// writeError answers an error in the provider's format.
	writeError(w http.ResponseWriter, status int, msg string)
	// writeResponse answers resp, streaming if d.stream.
	writeResponse(w http.ResponseWriter, d decoded, resp llm.Response, id string)
	// writeMidStreamError starts a streamed answer and fails inside it.
	writeMidStreamError(w http.ResponseWriter, d decoded, status int, msg, id string)
	// rateLimitHeaders sets the provider's rate-limit headers.
	rateLimitHeaders(h http.Header, lim RateLimit, st rateState, now time.Time)
	// cacheUsage splits input tokens into uncached, cache read and cache
	// write, as the provider's prompt cache would.
	cacheUsage(c *prefixCache, d decoded) llm.Usage
}

// decoded is a request body understood by a flavor.
type decoded struct {
	req    llm.Request
	stream bool
	// includeUsage: OpenAI stream_options.include_usage.
	includeUsage bool
	// segments are the cacheable pieces of the prompt in order, for the
	// prompt-cache simulation.
	segments []segment
}

// Server is a running fake provider. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL to give the provider's SDK (option.WithBaseURL).
	URL string

	ts     *httptest.Server
	flavor flavor

	mu         sync.Mutex
	script     scripted.Script
	requests   []Recorded
	failures   []Failure
	limit      RateLimit
	window     []accepted
	rateWindow time.Duration
	cache      prefixCache
	now        func() time.Time
	seq        int
}

type accepted struct {
	at     time.Time
	tokens int64
}

// NewAnthropic starts a fake Anthropic Messages API (POST /v1/messages).
// Close it when done.
func NewAnthropic(script scripted.Script) *Server {
	return start(anthropicFlavor{}, script, "")
}

// NewOpenAI starts a fake OpenAI Chat Completions API
// (POST /v1/chat/completions). URL ends in /v1, as the SDK's base URL does.
// Close it when done.
func NewOpenAI(script scripted.Script) *Server {
	return start(openaiFlavor{}, script, "/v1")
}

func start(f flavor, script scripted.Script, urlSuffix string) *Server {
	s := &Server{flavor: f, script: script, now: time.Now}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.ts.URL + urlSuffix
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.ts.Close() }

// SetScript replaces the script answering requests.
func (s *Server) SetScript(script scripted.Script) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = script
}

// FailNext makes the next n requests fail with f.
func (s *Server) FailNext(n int, f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures = append(s.failures, f)
	}
}

// SetRateLimit sets (or with a zero RateLimit clears) the rate limits.
func (s *Server) SetRateLimit(l RateLimit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = l
}

// SetRateWindow changes the window limits are counted over (default
// RateWindow), so tests of rate limiting need not last minutes.
func (s *Server) SetRateWindow(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateWindow = d
}

func (s *Server) windowLen() time.Duration {
	if s.rateWindow > 0 {
		return s.rateWindow
	}
	return RateWindow
}

// SetClock replaces the clock used for rate limits and Retry-After, so tests
// can move time without sleeping.
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// Requests returns a copy of every request received so far, in order.
func (s *Server) Requests() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// RequestCount is the number of requests received so far (failed ones too).
func (s *Server) RequestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// Last returns the most recent request; ok is false when there was none.
func (s *Server) Last() (r Recorded, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == 0 {
		return Recorded{}, false
	}
	return s.requests[len(s.requests)-1], true
}

// maxBody bounds a request body (the real APIs cap requests at 32 MB).
const maxBody = 32 << 20

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		s.flavor.writeError(w, http.StatusBadRequest, "could not read the request body: "+err.Error())
		return
	}
	s.mu.Lock()
	now := s.now()
	rec := Recorded{Time: now, Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
	idx := len(s.requests)
	s.requests = append(s.requests, rec)
	s.seq++
	id := fmt.Sprintf("%04d", s.seq)
	s.mu.Unlock()

	status := s.answer(w, r, body, now, idx, id)

	s.mu.Lock()
	s.requests[idx].Status = status
	s.mu.Unlock()
}

// answer handles one request and returns the status it answered with.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, body []byte, now time.Time, idx int, id string) int {
	f := s.flavor
	if !f.route(r.Method, r.URL.Path) {
		f.writeError(w, http.StatusNotFound, fmt.Sprintf("%s %s is not an endpoint of this fake %s API", r.Method, r.URL.Path, f.name()))
		return http.StatusNotFound
	}
	if !f.authorized(r.Header) {
		f.writeError(w, http.StatusUnauthorized, "missing API key")
		return http.StatusUnauthorized
	}
	d, err := f.decode(body)
	if err != nil {
		f.writeError(w, http.StatusBadRequest, err.Error())
		return http.StatusBadRequest
	}

	s.mu.Lock()
	s.requests[idx].Stream = d.stream
	s.requests[idx].Request = d.req
	lim := s.limit
	s.prune(now)
	script := s.script
	scriptedUsage := script.Entry(scripted.Turn(d.req)).Usage
	input := segmentTokens(d.segments)
	if scriptedUsage != nil {
		input = scriptedUsage.InputTokens + scriptedUsage.CacheReadTokens + scriptedUsage.CacheWriteTokens
	}
	if wait, limited := s.overLimit(now, input); limited {
		st := s.state(now)
		s.mu.Unlock()
		f.rateLimitHeaders(w.Header(), lim, st, now)
		setRetryAfter(w.Header(), wait)
		f.writeError(w, http.StatusTooManyRequests, "rate limit exceeded for this fake API (per-minute limit)")
		return http.StatusTooManyRequests
	}
	var fail *Failure
	if len(s.failures) > 0 {
		fail = &s.failures[0]
		s.failures = s.failures[1:]
	}
	var resp llm.Response
	if fail == nil || fail.MidStream && d.stream {
		// The provider processed the prompt: it counts and it is cached.
		resp = script.Respond(d.req)
		if scriptedUsage == nil {
			u := f.cacheUsage(&s.cache, d)
			resp.Usage.InputTokens, resp.Usage.CacheReadTokens, resp.Usage.CacheWriteTokens =
				u.InputTokens, u.CacheReadTokens, u.CacheWriteTokens
		}
		s.window = append(s.window, accepted{at: now, tokens: input + resp.Usage.OutputTokens})
	}
	st := s.state(now)
	s.mu.Unlock()

	if lim != (RateLimit{}) {
		f.rateLimitHeaders(w.Header(), lim, st, now)
	}
	if fail != nil {
		msg := fail.Message
		if msg == "" {
			msg = defaultMessage(fail.Status)
		}
		setRetryAfter(w.Header(), fail.RetryAfter)
		if fail.MidStream && d.stream {
			f.writeMidStreamError(w, d, fail.Status, msg, id)
			return http.StatusOK
		}
		f.writeError(w, fail.Status, msg)
		return fail.Status
	}
	f.writeResponse(w, d, resp, id)
	return http.StatusOK
}

func defaultMessage(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "rate limited (injected by the fake)"
	case llm.StatusOverloaded:
		return "Overloaded"
	}
	return fmt.Sprintf("%s (injected by the fake)", http.StatusText(status))
}

// setRetryAfter sets Retry-After in whole seconds (rounded up, as the header
// allows no fractions) and retry-after-ms exactly.
func setRetryAfter(h http.Header, d time.Duration) {
	if d <= 0 {
		return
	}
	h.Set(llm.HeaderRetryAfter, fmt.Sprint(int64(math.Ceil(d.Seconds()))))
	h.Set(llm.HeaderRetryAfterMs, fmt.Sprint(d.Milliseconds()))
}

// prune drops accepted requests older than the window. Caller holds mu.
func (s *Server) prune(now time.Time) {
	i := 0
	for i < len(s.window) && now.Sub(s.window[i].at) >= s.windowLen() {
		i++
	}
	s.window = s.window[i:]
}

// rateState is what the window holds now.
type rateState struct {
	requests int
	tokens   int64
	// resetRequests/resetTokens: when the oldest entry leaves the window.
	reset time.Time
}

func (s *Server) state(now time.Time) rateState {
	st := rateState{requests: len(s.window), reset: now}
	for _, a := range s.window {
		st.tokens += a.tokens
	}
	if len(s.window) > 0 {
		st.reset = s.window[0].at.Add(s.windowLen())
	}
	return st
}

// overLimit reports whether a request needing input tokens must be refused,
// and how long until it would fit. Caller holds mu.
func (s *Server) overLimit(now time.Time, input int64) (time.Duration, bool) {
	lim := s.limit
	if lim.RequestsPerMinute > 0 && len(s.window) >= lim.RequestsPerMinute {
		oldest := s.window[len(s.window)-lim.RequestsPerMinute]
		return oldest.at.Add(s.windowLen()).Sub(now), true
	}
	if lim.TokensPerMinute > 0 {
		var used int64
		for _, a := range s.window {
			used += a.tokens
		}
		if used+input > lim.TokensPerMinute {
			// Wait until enough old requests leave the window.
			wait := s.windowLen()
			for _, a := range s.window {
				used -= a.tokens
				if used+input <= lim.TokensPerMinute {
					wait = a.at.Add(s.windowLen()).Sub(now)
					break
				}
			}
			return max(wait, time.Second), true
		}
	}
	return 0, false
}

// segment is one cacheable piece of a prompt (a tool, the system prompt, a
// content block), in prompt order.
type segment struct {
	data       []byte
	breakpoint bool // carries a cache_control marker (Anthropic)
}

// prefixCache simulates a provider prompt cache: it remembers hashes of
// prompt prefixes ending at segment boundaries.
type prefixCache struct {
	seen map[[32]byte]bool
}

// use looks segs up and stores them. automatic (OpenAI) caches every prefix
// and reports no writes; otherwise (Anthropic) only prefixes ending at a
// breakpoint are stored, the tokens up to the last breakpoint that were not
// read are reported as written, and a prompt with no breakpoint neither reads
// nor writes.
func (c *prefixCache) use(segs []segment, automatic bool) llm.Usage {
	if c.seen == nil {
		c.seen = map[[32]byte]bool{}
	}
	h := sha256.New()
	var total, read, upToLast int64
	last := -1
	for i, sg := range segs {
		if sg.breakpoint {
			last = i
		}
	}
	hashes := make([][32]byte, len(segs))
	for i, sg := range segs {
		fmt.Fprintf(h, "%d:", len(sg.data))
		h.Write(sg.data)
		copy(hashes[i][:], h.Sum(nil))
		total += llm.EstimateTextTokens(len(sg.data))
		if c.seen[hashes[i]] && (automatic || last >= i) {
			read = total
		}
		if i == last {
			upToLast = total
		}
	}
	u := llm.Usage{CacheReadTokens: read}
	for i, sg := range segs {
		if automatic || sg.breakpoint {
			c.seen[hashes[i]] = true
		}
	}
	if !automatic && last >= 0 && upToLast > read {
		u.CacheWriteTokens = upToLast - read
	}
	u.InputTokens = total - u.CacheReadTokens - u.CacheWriteTokens
	return u
}

// segmentTokens is the estimated size of a prompt made of segs.
func segmentTokens(segs []segment) int64 {
	var n int64
	for _, sg := range segs {
		n += llm.EstimateTextTokens(len(sg.data))
	}
	return n
}
