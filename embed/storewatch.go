package embed

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Store watchdog defaults.
const (
	// DefaultStoreCheckInterval is how often the embedded server's store
	// is checked for write errors (and, while it has one, whether the
	// cause is gone).
	DefaultStoreCheckInterval = time.Second
	// DefaultStoreMinFree is the free space the data directory's
	// filesystem needs before JetStream is restarted after a fault.
	DefaultStoreMinFree = 4 << 20
	// DefaultStoreFaultLogEvery: a store fault is logged once per code in
	// this period, not once per failed write.
	DefaultStoreFaultLogEvery = protocol.DefaultStoreFaultLogEvery
	// storeProbeSize is what the write probe writes (and fsyncs) to prove
	// the filesystem takes writes again.
	storeProbeSize = 64 << 10
	storeProbeName = ".polos-write-probe"
	// maxStoreRestartWait caps the backoff between JetStream restarts that
	// did not clear a fault.
	maxStoreRestartWait = time.Minute
)

// storeWatch watches the embedded server's JetStream store.
//
// What nats-server v2.15 does when its disk fails (read in its sources):
// a write that fails with an I/O error (ENOSPC: "no space left on device",
// EROFS) marks the stream with a sticky write error; the publish gets no
// answer at all, and every later write to that stream fails the same way,
// even after space is freed, until the stream is loaded again (a restart).
// A permission error disables JetStream for the whole server. Writes
// stopped by the server's own storage limit (75% of the free space at
// start) are answered with error 10023/10047 and recover by themselves.
//
// The watchdog finds sticky write errors and a disabled JetStream through
// the server's health report, names them with protocol.ClassifyStoreError,
// logs each code once per DefaultStoreFaultLogEvery with its cause and
// fix, and, once a write probe on the data directory succeeds with
// DefaultStoreMinFree free, restarts JetStream in the same process
// (server.ShutdownJetStream, then EnableJetStream: every stream is loaded
// again from disk, in-process and TCP connections stay up). Nothing is
// restarted while the cause lasts, and a fault that outlives a restart
// (not the disk, then) is restarted again only after a growing wait (up to
// a minute).
type storeWatch struct {
	ns       *server.Server
	opts     server.Options // as the server was started
	storeDir string         // the server's StoreDir (JetStream adds "jetstream")
	log      *slog.Logger
	every    time.Duration
	minFree  uint64

	fault       atomic.Pointer[perr.Error]
	since       time.Time
	restartWait time.Duration // backoff after restarts that did not help
	nextRestart time.Time
	logged      map[perr.Code]time.Time
	restarts    atomic.Int64
	stop        chan struct{}
	done        chan struct{}
	once        sync.Once
}

func newStoreWatch(ns *server.Server, opts *server.Options, log *slog.Logger, every time.Duration) *storeWatch {
	if every <= 0 {
		every = DefaultStoreCheckInterval
	}
	w := &storeWatch{ns: ns, opts: *opts, storeDir: opts.StoreDir, log: log, every: every, minFree: DefaultStoreMinFree,
		logged: map[perr.Code]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w
}

func (w *storeWatch) close() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

func (w *storeWatch) loop() {
	defer close(w.done)
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.check()
		}
	}
}

// check runs one round: detect, report, and recover when the cause is gone.
func (w *storeWatch) check() {
	f := w.detect()
	if f == nil {
		w.clear()
		return
	}
	if w.fault.Load() == nil {
		w.since = time.Now()
	}
	if perr.CodeOf(f) == protocol.CodeStoreIO {
		// A write error the server does not name (or JetStream disabled):
		// the probe says what the disk does.
		if pf := w.probe(); pf != nil {
			f = pf
		}
	}
	w.fault.Store(f)
	w.report(f)
	if w.probe() != nil || time.Now().Before(w.nextRestart) {
		return // the cause lasts: restarting would fail the same way
	}
	w.restart()
	if w.detect() == nil {
		w.clear()
		return
	}
	// The fault outlived a restart (not the disk, then): back off.
	w.restartWait = min(max(2*w.restartWait, w.every), maxStoreRestartWait)
	w.nextRestart = time.Now().Add(w.restartWait)
}

// detect returns the store's fault, or nil while it is healthy.
func (w *storeWatch) detect() *perr.Error {
	if !w.ns.JetStreamEnabled() {
		return perr.New(protocol.CodeStoreIO, protocol.FixStoreUnavailable, "JetStream is disabled on the embedded server (its store failed)")
	}
	h := w.ns.Healthz(&server.HealthzOptions{Details: true})
	for _, e := range h.Errors {
		if !strings.Contains(e.Error, "write error") {
			continue // damage found at start is reported elsewhere
		}
		cause := errors.New(e.Error)
		f, ok := protocol.ClassifyStoreError(cause)
		if !ok {
			f = protocol.StoreFault{Code: protocol.CodeStoreIO, Fix: protocol.FixStoreUnavailable}
		}
		return perr.Wrap(cause, f.Code, f.Fix, "the JetStream store cannot write")
	}
	return nil
}

// probe writes and fsyncs a small file in the data directory and checks
// the free space: nil when the disk takes writes again, else the coded
// reason it does not.
func (w *storeWatch) probe() *perr.Error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(w.storeDir, &st); err == nil {
		if free := st.Bavail * uint64(st.Bsize); free < w.minFree {
			return perr.New(protocol.CodeStoreFull, protocol.FixStoreFull, "the JetStream store cannot write: %d bytes free on %s (at least %d needed)", free, w.storeDir, w.minFree)
		}
	}
	path := filepath.Join(w.storeDir, storeProbeName)
	err := func() error {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Write(make([]byte, storeProbeSize)); err != nil {
			return err
		}
		return f.Sync()
	}()
	_ = os.Remove(path)
	if err == nil {
		return nil
	}
	f, ok := protocol.ClassifyStoreError(err)
	if !ok {
		f = protocol.StoreFault{Code: protocol.CodeStoreIO, Fix: protocol.FixStoreUnavailable}
	}
	return perr.Wrap(err, f.Code, f.Fix, "the JetStream store cannot write")
}

// restart loads every stream again from disk, clearing sticky write errors.
func (w *storeWatch) restart() {
	if w.ns.JetStreamEnabled() {
		if err := w.ns.ShutdownJetStream(); err != nil {
			w.log.Warn("stopping JetStream to recover the store failed", "err", err)
			return
		}
	}
	// As the server started it: the same store directory, fsync setting
	// and (dynamic) limits.
	o := w.opts
	cfg := &server.JetStreamConfig{StoreDir: o.StoreDir, SyncAlways: o.SyncAlways, SyncInterval: o.SyncInterval,
		MaxMemory: o.JetStreamMaxMemory, MaxStore: o.JetStreamMaxStore, Strict: !o.NoJetStreamStrict}
	if err := w.ns.EnableJetStream(cfg); err != nil {
		w.log.Warn("restarting JetStream to recover the store failed; retrying", "err", err)
		return
	}
	w.restarts.Add(1)
}

func (w *storeWatch) clear() {
	if f := w.fault.Swap(nil); f != nil {
		w.log.Warn("store recovered: writes are accepted again", "code", f.Code, "after", time.Since(w.since).Round(time.Millisecond), "jetstream_restarts", w.restarts.Load())
		w.logged = map[perr.Code]time.Time{}
	}
	w.restartWait, w.nextRestart = 0, time.Time{}
}

// report logs f once per code per DefaultStoreFaultLogEvery.
func (w *storeWatch) report(f *perr.Error) {
	if at, ok := w.logged[f.Code]; ok && time.Since(at) < DefaultStoreFaultLogEvery {
		return
	}
	w.logged[f.Code] = time.Now()
	w.log.Error(f.Error())
}

// StoreFault is the embedded store's fault right now: nil while it takes
// writes, else a coded error (STORE_FULL, STORE_READ_ONLY,
// STORE_UNAVAILABLE) naming the cause and the fix. Clients pass it to
// client.StoreDiagnosis.
func (s *Server) StoreFault() error {
	if s.watch == nil {
		return nil
	}
	if f := s.watch.fault.Load(); f != nil {
		return f
	}
	return nil
}

// StoreRestarts counts the JetStream restarts the watchdog made to recover
// the store.
func (s *Server) StoreRestarts() int64 {
	if s.watch == nil {
		return 0
	}
	return s.watch.restarts.Load()
}
