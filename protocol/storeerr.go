package protocol

import (
	"context"
	"errors"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/perr"
)

// Store error codes: why the JetStream store refused or did not answer a
// read or write. They are the one place every Polos process names a store
// fault (ClassifyStoreError), so an operator sees the same code in the
// CLI, the HTTP API and polosd's log.
const (
	// CodeStoreFull: the server's disk (or its JetStream storage limit)
	// is full. Writes resume by themselves once space is freed.
	CodeStoreFull perr.Code = "STORE_FULL"
	// CodeStoreReadOnly: the store's filesystem refuses writes (mounted
	// read-only, or permissions changed).
	CodeStoreReadOnly perr.Code = "STORE_READ_ONLY"
	// CodeStoreNoQuorum: a clustered stream has no leader (an election is
	// running, or too few servers are up to form a quorum).
	CodeStoreNoQuorum perr.Code = "STORE_NO_QUORUM"
)

// Fixes of the store fault codes (one line each, as perr expects).
const (
	FixStoreFull        = "free space on the server's data directory (or raise its JetStream max_file_store); writes resume by themselves, no restart needed"
	FixStoreReadOnly    = "make the server's data directory writable again (remount read-write, fix its owner and permissions); writes resume by themselves"
	FixStoreNoQuorum    = "wait for the cluster's leader election (seconds), or bring enough NATS servers back up to form a quorum (2 of 3)"
	FixStoreUnavailable = "check that the NATS server is up and answering (polosd running?); on a cluster a leader election takes seconds; polosd's log names the cause when its store failed"
)

// StoreFault is what ClassifyStoreError makes of an error.
type StoreFault struct {
	Code perr.Code
	// Fix says what to do (FixStore*).
	Fix string
	// Cause is a short description of what the server reported
	// ("no space left on device", "no response from stream", ...).
	Cause string
}

// JetStream API error codes that name a store fault (nats-server
// errors.json).
var storeFaultAPICodes = map[jetstream.ErrorCode]perr.Code{
	10002: CodeStoreFull,     // resource limits exceeded for account
	10023: CodeStoreFull,     // insufficient resources (server storage limit)
	10047: CodeStoreFull,     // insufficient storage resources available
	10005: CodeStoreNoQuorum, // no suitable peers for placement
	10008: CodeStoreNoQuorum, // JetStream system temporarily unavailable
	10009: CodeStoreNoQuorum, // cluster can not handle request (not leader)
	10118: CodeStoreNoQuorum, // stream is offline
	10163: CodeStoreNoQuorum, // expected last sequence per subject temporarily unavailable
	10194: CodeStoreNoQuorum, // stream is offline: <reason>
	10039: CodeStoreIO,       // JetStream not enabled for account
	10076: CodeStoreIO,       // JetStream not enabled (the server disabled it after a store failure)
}

// Texts a server or the OS uses for a store fault, in the order they are
// tried (the first match wins).
var storeFaultTexts = []struct {
	text string
	code perr.Code
}{
	{"no space left", CodeStoreFull},
	{"insufficient resources", CodeStoreFull},
	{"insufficient storage", CodeStoreFull},
	{"resource limits exceeded", CodeStoreFull},
	{"read-only file system", CodeStoreReadOnly},
	{"permission denied", CodeStoreReadOnly},
	{"operation not permitted", CodeStoreReadOnly},
	{"no quorum", CodeStoreNoQuorum},
	{"stream is offline", CodeStoreNoQuorum},
	{"temporarily unavailable", CodeStoreNoQuorum},
	{"jetstream not enabled", CodeStoreIO},
}

// ClassifyStoreError says whether err is a store fault and which: ok is
// false for anything the store's state cannot explain (a CAS conflict, a
// malformed request, a permissions violation of the NATS account, a
// cancelled context), which callers must not retry as a store fault.
// Transport failures (no answer in time, no responders, a connection
// being re-established) are CodeStoreIO (STORE_UNAVAILABLE): the write
// may or may not have landed.
func ClassifyStoreError(err error) (StoreFault, bool) {
	if err == nil {
		return StoreFault{}, false
	}
	if code := perr.CodeOf(err); IsStoreFaultCode(code) {
		var pe *perr.Error
		errors.As(err, &pe)
		f := faultOf(code, "")
		if pe.Fix != "" {
			f.Fix = pe.Fix
		}
		f.Cause = pe.Msg
		if pe.Cause != nil {
			f.Cause = pe.Cause.Error()
		}
		return f, true
	}
	if errors.Is(err, context.Canceled) {
		return StoreFault{}, false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		if code, ok := storeFaultAPICodes[apiErr.ErrorCode]; ok {
			return faultOf(code, apiErr.Description), true
		}
	}
	text := strings.ToLower(err.Error())
	if strings.Contains(text, "permissions violation") || strings.Contains(text, "authorization violation") {
		return StoreFault{}, false // the NATS account's permissions, not the disk's
	}
	for _, t := range storeFaultTexts {
		if strings.Contains(text, t.text) {
			return faultOf(t.code, err.Error()), true
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return faultOf(CodeStoreIO, "no answer from the server in time"), true
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		return faultOf(CodeStoreIO, "no stream answered (a leader election, or JetStream restarting or disabled)"), true
	case errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrNoServers):
		return faultOf(CodeStoreIO, "the connection to the server is being re-established"), true
	}
	return StoreFault{}, false
}

// IsStoreFaultCode reports whether code is one of the store fault codes.
func IsStoreFaultCode(code perr.Code) bool {
	switch code {
	case CodeStoreFull, CodeStoreReadOnly, CodeStoreNoQuorum, CodeStoreIO:
		return true
	}
	return false
}

func faultOf(code perr.Code, cause string) StoreFault {
	f := StoreFault{Code: code, Cause: cause}
	switch code {
	case CodeStoreFull:
		f.Fix = FixStoreFull
	case CodeStoreReadOnly:
		f.Fix = FixStoreReadOnly
	case CodeStoreNoQuorum:
		f.Fix = FixStoreNoQuorum
	default:
		f.Fix = FixStoreUnavailable
	}
	return f
}

// StoreError wraps err in the coded error of its store fault (err itself
// when it is no store fault, or is already coded as one).
func StoreError(err error, format string, args ...any) error {
	f, ok := ClassifyStoreError(err)
	if !ok {
		return err
	}
	if IsStoreFaultCode(perr.CodeOf(err)) {
		return err
	}
	return perr.Wrap(err, f.Code, f.Fix, format, args...)
}

// FixNotProvisioned is the fix when a Polos stream or bucket does not
// exist where a process looked for it.
const FixNotProvisioned = "start polosd with the server role once (it provisions the streams and buckets), or check that --nats-url and the credentials point at the right server and namespace"

// Unavailable wraps err, met while opening or reading a Polos asset, in
// code with a fix that says what is happening: the asset was never
// provisioned, or the store has a fault (a leader election, a full disk,
// ...: ClassifyStoreError), or the server did not answer.
func Unavailable(err error, code perr.Code, format string, args ...any) error {
	fix := FixStoreUnavailable
	switch f, ok := ClassifyStoreError(err); {
	case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrConsumerNotFound):
		fix = FixNotProvisioned
	case ok:
		fix = f.Fix
	}
	return perr.Wrap(err, code, fix, format, args...)
}
