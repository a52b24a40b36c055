package protocol

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/polos-run/polos/perr"
)

// Store write retry defaults. A write that fails with a store fault
// (ClassifyStoreError) is tried again with capped exponential backoff and
// jitter for up to DefaultStoreRetryFor: longer than a JetStream leader
// election (4-6.4 s measured on a 3-node cluster) or a broker stall, so an
// executor's finished step is not dropped by one.
const (
	DefaultStoreRetryFor = 30 * time.Second
	// DefaultStoreRetryInitial is the first backoff; each next one is 1.6x
	// longer, randomised by +-DefaultStoreRetryJitter, capped at
	// DefaultStoreRetryMax.
	DefaultStoreRetryInitial = 50 * time.Millisecond
	DefaultStoreRetryMax     = 2 * time.Second
	DefaultStoreRetryJitter  = 0.5
	storeRetryMultiplier     = 1.6
	// DefaultStoreAttemptTimeout bounds one attempt (a publish waiting for
	// its ack). A server that stores nothing (a full disk: nats-server then
	// answers no publish at all) is noticed after this long.
	DefaultStoreAttemptTimeout = 3 * time.Second
	// DefaultStoreReadRetryFor bounds how long a read whose stream did not
	// answer (JetStream restarting, an election) is asked again.
	DefaultStoreReadRetryFor = 10 * time.Second
	// DefaultStoreFaultLogEvery: a store fault is logged once per code in
	// this period, not once per failed write.
	DefaultStoreFaultLogEvery = time.Minute
)

// StoreRetry says how a store write is retried. The zero value uses the
// defaults and waits out every store fault up to For.
type StoreRetry struct {
	// For bounds the whole write, attempts and backoffs (0:
	// DefaultStoreRetryFor); the caller's ctx deadline bounds it too.
	For time.Duration
	// Initial and Max are the first and the largest backoff (0: defaults).
	Initial, Max time.Duration
	// Attempt bounds one attempt (0: DefaultStoreAttemptTimeout).
	Attempt time.Duration
	// GiveUpOn lists fault codes returned at once instead of waited out:
	// an interactive caller is told the disk is full rather than kept
	// waiting (InteractiveStoreRetry).
	GiveUpOn []perr.Code
	// Diagnose, when set, names the store's fault when an attempt got no
	// usable answer (nats-server answers no publish when its disk is
	// full): it returns nil while the store is healthy, or a coded store
	// error (embed.Server.StoreFault).
	Diagnose func() error
	// OnRetry, when set, is called before each backoff with the
	// classified error (tests count retries with it).
	OnRetry func(err error, wait time.Duration)
}

// InteractiveStoreRetry is the policy of writes a person waits for
// (client starts, resumes, cancels): faults that need an operator
// (STORE_FULL, STORE_READ_ONLY) come back at once; elections and stalls
// are still waited out.
func InteractiveStoreRetry() StoreRetry {
	return StoreRetry{GiveUpOn: []perr.Code{CodeStoreFull, CodeStoreReadOnly}}
}

// Final marks an error of an attempt as not to be retried.
func Final(err error) error { return backoff.Permanent(err) }

// AttemptContext bounds one attempt of a write made under ctx.
func (p StoreRetry) AttemptContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.AttemptTimeout())
}

// AttemptTimeout bounds one attempt (Attempt, or DefaultStoreAttemptTimeout).
func (p StoreRetry) AttemptTimeout() time.Duration {
	if p.Attempt > 0 {
		return p.Attempt
	}
	return DefaultStoreAttemptTimeout
}

// Do runs op until it succeeds, returns a Final or non-store error, the
// bound passes, or ctx ends. op gets ctx bounded per attempt
// (AttemptContext). The error returned is coded: the last attempt's store
// fault (STORE_FULL, STORE_READ_ONLY, STORE_NO_QUORUM, STORE_UNAVAILABLE)
// with what (e.g. "append to run X") in its message, or op's own error.
func (p StoreRetry) Do(ctx context.Context, what string, op func(ctx context.Context) error) error {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     or(p.Initial, DefaultStoreRetryInitial),
		RandomizationFactor: DefaultStoreRetryJitter,
		Multiplier:          storeRetryMultiplier,
		MaxInterval:         or(p.Max, DefaultStoreRetryMax),
	}
	if p.Diagnose != nil && len(p.GiveUpOn) > 0 {
		if err := p.Diagnose(); err != nil && p.givesUp(perr.CodeOf(err)) {
			return perr.Wrap(err, perr.CodeOf(err), "", "%s refused", what)
		}
	}
	attempts := 0
	var last, final error // the last store fault; an error not to retry
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		attempts++
		actx, cancel := p.AttemptContext(ctx)
		err := op(actx)
		cancel()
		if err == nil {
			return struct{}{}, nil
		}
		var fe *backoff.PermanentError
		if errors.As(err, &fe) {
			final = fe.Err
			return struct{}{}, err
		}
		f, ok := ClassifyStoreError(err)
		if !ok {
			if ctx.Err() == nil {
				final = err // a cancelled caller is reported below
			}
			return struct{}{}, Final(err)
		}
		if f.Code == CodeStoreIO && p.Diagnose != nil {
			if d := p.Diagnose(); d != nil {
				err = d
				f, _ = ClassifyStoreError(d)
			}
		}
		fix := f.Fix
		if FixOf(err) != "" {
			fix = "" // err says it already
		}
		msg := fmt.Sprintf("%s failed after %d attempts", what, attempts)
		if f.Cause != "" && !strings.Contains(err.Error(), f.Cause) {
			msg += " (" + f.Cause + ")"
		}
		last = perr.Wrap(err, f.Code, fix, "%s", msg)
		if p.givesUp(f.Code) {
			final = last
			return struct{}{}, Final(last)
		}
		return struct{}{}, last
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(or(p.For, DefaultStoreRetryFor)), backoff.WithNotify(func(err error, d time.Duration) {
		if p.OnRetry != nil {
			p.OnRetry(err, d)
		}
	}))
	switch {
	case err == nil:
		return nil
	case final != nil:
		return final
	case ctx.Err() != nil && last != nil:
		return perr.Wrap(last, perr.CodeOf(last), "", "%s: gave up at the caller's deadline", what)
	case ctx.Err() != nil:
		return perr.Wrap(ctx.Err(), CodeStoreIO, "", "%s cancelled", what)
	case last != nil:
		return last
	}
	return err
}

func (p StoreRetry) givesUp(code perr.Code) bool {
	for _, c := range p.GiveUpOn {
		if c == code {
			return true
		}
	}
	return false
}

// FixOf is the fix of a coded error ("" when none).
func FixOf(err error) string {
	var pe *perr.Error
	if errors.As(err, &pe) {
		return pe.Fix
	}
	return ""
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
