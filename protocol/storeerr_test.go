package protocol_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

func TestClassifyStoreError(t *testing.T) {
	api := func(code jetstream.ErrorCode, desc string) error {
		return &jetstream.APIError{Code: 503, ErrorCode: code, Description: desc}
	}
	for _, tc := range []struct {
		name string
		err  error
		code perr.Code // "" = not a store fault
	}{
		{"insufficient resources 10023", api(10023, "insufficient resources"), protocol.CodeStoreFull},
		{"storage resources 10047", api(10047, "insufficient storage resources available"), protocol.CodeStoreFull},
		{"account limits 10002", api(10002, "resource limits exceeded for account"), protocol.CodeStoreFull},
		{"store failed: no space", api(10077, "write /d/1.blk: no space left on device"), protocol.CodeStoreFull},
		{"ENOSPC from the OS", &os.PathError{Op: "write", Path: "/d/x", Err: syscall.ENOSPC}, protocol.CodeStoreFull},
		{"read-only file system", &os.PathError{Op: "open", Path: "/d/x", Err: syscall.EROFS}, protocol.CodeStoreReadOnly},
		{"permission denied", &os.PathError{Op: "open", Path: "/d/x", Err: syscall.EACCES}, protocol.CodeStoreReadOnly},
		{"stream offline", api(10118, "stream is offline"), protocol.CodeStoreNoQuorum},
		{"cluster unavailable", api(10008, "JetStream system temporarily unavailable"), protocol.CodeStoreNoQuorum},
		{"not leader", api(10009, "JetStream cluster can not handle request"), protocol.CodeStoreNoQuorum},
		{"jetstream disabled", api(10076, "JetStream not enabled"), protocol.CodeStoreIO},
		{"timeout", nats.ErrTimeout, protocol.CodeStoreIO},
		{"deadline", fmt.Errorf("publish: %w", context.DeadlineExceeded), protocol.CodeStoreIO},
		{"no responders", nats.ErrNoResponders, protocol.CodeStoreIO},
		{"no stream response", jetstream.ErrNoStreamResponse, protocol.CodeStoreIO},
		{"already coded", perr.New(protocol.CodeStoreFull, "x", "full"), protocol.CodeStoreFull},
		{"wrong last sequence", api(10071, "wrong last sequence: 4"), ""},
		{"message too big", api(10054, "message size exceeds maximum allowed"), ""},
		{"account permissions", errors.New("nats: permissions violation for publish to \"x\""), ""},
		{"cancelled", context.Canceled, ""},
		{"other coded error", perr.New("NONDETERMINISM", "", "x"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, ok := protocol.ClassifyStoreError(tc.err)
			if tc.code == "" {
				if ok {
					t.Fatalf("%v classified as %s, want no store fault", tc.err, f.Code)
				}
				return
			}
			if !ok || f.Code != tc.code || f.Fix == "" {
				t.Fatalf("%v classified as %+v (ok %v), want %s with a fix", tc.err, f, ok, tc.code)
			}
		})
	}
}

func TestStoreRetry(t *testing.T) {
	fast := protocol.StoreRetry{For: 400 * time.Millisecond, Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Attempt: 50 * time.Millisecond}
	full := perr.New(protocol.CodeStoreFull, protocol.FixStoreFull, "the JetStream store cannot write: no space left on device")
	t.Run("transient fault waited out", func(t *testing.T) {
		n := 0
		err := fast.Do(context.Background(), "w", func(context.Context) error {
			if n++; n < 4 {
				return nats.ErrTimeout
			}
			return nil
		})
		if err != nil || n != 4 {
			t.Fatalf("err %v after %d attempts", err, n)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		t0 := time.Now()
		n := 0
		err := fast.Do(context.Background(), "w", func(context.Context) error { n++; return nats.ErrNoResponders })
		if perr.CodeOf(err) != protocol.CodeStoreIO || n < 3 || time.Since(t0) > 2*time.Second {
			t.Fatalf("err %v after %d attempts in %s", err, n, time.Since(t0))
		}
	})
	t.Run("stops at ctx deadline", func(t *testing.T) {
		p := fast
		p.For = time.Minute
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		err := p.Do(ctx, "w", func(context.Context) error { return nats.ErrTimeout })
		if perr.CodeOf(err) != protocol.CodeStoreIO || time.Since(t0) > time.Second {
			t.Fatalf("err %v after %s", err, time.Since(t0))
		}
	})
	t.Run("attempt is bounded", func(t *testing.T) {
		n := 0
		err := fast.Do(context.Background(), "w", func(ctx context.Context) error {
			if n++; n == 1 {
				<-ctx.Done() // a server that never answers
				return ctx.Err()
			}
			return nil
		})
		if err != nil || n != 2 {
			t.Fatalf("err %v after %d attempts", err, n)
		}
	})
	t.Run("final and foreign errors are not retried", func(t *testing.T) {
		for _, e := range []error{protocol.Final(nats.ErrTimeout), errors.New("nats: permissions violation")} {
			n := 0
			if err := fast.Do(context.Background(), "w", func(context.Context) error { n++; return e }); err == nil || n != 1 {
				t.Fatalf("%v: err %v after %d attempts", e, err, n)
			}
		}
	})
	t.Run("diagnosis names a silent fault and interactive callers give up", func(t *testing.T) {
		p := fast
		p.GiveUpOn = protocol.InteractiveStoreRetry().GiveUpOn
		var healthy = true
		p.Diagnose = func() error {
			if healthy {
				return nil
			}
			return full
		}
		n := 0
		healthy = true
		err := p.Do(context.Background(), "w", func(context.Context) error { n++; healthy = false; return nats.ErrTimeout })
		if perr.CodeOf(err) != protocol.CodeStoreFull || n != 1 {
			t.Fatalf("err %v after %d attempts, want STORE_FULL after 1", err, n)
		}
		n = 0
		err = p.Do(context.Background(), "w", func(context.Context) error { n++; return nil })
		if perr.CodeOf(err) != protocol.CodeStoreFull || n != 0 {
			t.Fatalf("known fault: err %v after %d attempts, want STORE_FULL before any", err, n)
		}
	})
	t.Run("executors wait a full disk out", func(t *testing.T) {
		p := fast
		p.Diagnose = func() error { return full }
		n := 0
		err := p.Do(context.Background(), "w", func(context.Context) error {
			if n++; n < 3 {
				return nats.ErrTimeout
			}
			return nil
		})
		if err != nil || n != 3 {
			t.Fatalf("err %v after %d attempts", err, n)
		}
	})
}

func TestUnavailableSaysWhatIsHappening(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		fix  string
	}{
		{"never provisioned", jetstream.ErrBucketNotFound, "start polosd with the server role once"},
		{"election", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream cluster not available"}, "leader election"},
		{"no answer", context.DeadlineExceeded, "leader election"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := protocol.Unavailable(c.err, protocol.CodeStoreIO, "lease bucket unavailable")
			if !strings.Contains(err.Error(), c.fix) || strings.Contains(err.Error(), "polosd once") {
				t.Fatalf("fix of %v: %v", c.err, err)
			}
		})
	}
}
