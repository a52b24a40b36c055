package dispatch

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// Host key defaults.
const (
	// KeyFile is the host key's file name in the daemon's data directory.
	// Every sandbox host of a namespace must hold the same key: hosts that
	// share a data directory share it; for several machines, copy the file
	// (mode 0600) into each one's data directory.
	KeyFile = "sandbox-host.key"
	// KeyBytes is the size of a generated key.
	KeyBytes = 32
	// sealVersion starts every seal, so the format can change.
	sealVersion = "v1"
	// sealDomain separates seal MACs from any other use of the key.
	sealDomain = "polos-sandbox-seal-v1"
)

// CodeHostKey: the host key cannot be read, made or trusted.
const CodeHostKey perr.Code = "SANDBOX_HOST_KEY"

// Key is a sandbox host's secret: it seals the Infos the host creates and
// checks the seals of every later request. Its zero value is not usable.
type Key struct {
	secret []byte
	id     string
}

// NewKey returns a fresh random key (for tests and single-process use; a
// daemon keeps its key in its data directory: LoadOrCreateKey).
func NewKey() (Key, error) {
	b := make([]byte, KeyBytes)
	if _, err := rand.Read(b); err != nil {
		return Key{}, perr.Wrap(err, CodeHostKey, "", "cannot generate a sandbox host key")
	}
	return KeyFromBytes(b)
}

// KeyFromBytes returns the key of secret, which must be at least KeyBytes
// bytes.
func KeyFromBytes(secret []byte) (Key, error) {
	if len(secret) < KeyBytes {
		return Key{}, perr.New(CodeHostKey, fmt.Sprintf("use a key of at least %d random bytes", KeyBytes),
			"sandbox host key is %d bytes, expected at least %d", len(secret), KeyBytes)
	}
	s := append([]byte(nil), secret...)
	h := sha256.Sum256(append([]byte("polos-sandbox-key-id\x00"), s...))
	return Key{secret: s, id: hex.EncodeToString(h[:4])}, nil
}

// ID names the key without revealing it (a hash prefix); seals carry it so
// a host holding another key says so.
func (k Key) ID() string { return k.id }

func (k Key) valid() bool { return len(k.secret) >= KeyBytes }

// LoadOrCreateKey reads the host key at path (hex, one line), or creates
// it (KeyBytes random bytes, mode 0600, its directory 0700) when there is
// none. Hosts starting together on one data directory end up with the same
// key: the file is created by a hard link of a complete temporary file, so
// exactly one creation wins and the others read it.
//
// It refuses a key file that others may read or write (group or other
// permission bits), or that belongs to another user: anyone who can read
// the key can forge sandbox Infos for this host.
func LoadOrCreateKey(path string) (Key, error) {
	k, err := loadKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Key{}, perr.Wrap(err, CodeHostKey, "check the data directory's permissions", "cannot create the directory of %s", path)
	}
	secret := make([]byte, KeyBytes)
	if _, err := rand.Read(secret); err != nil {
		return Key{}, perr.Wrap(err, CodeHostKey, "", "cannot generate a sandbox host key")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".sandbox-host.key-*") // mode 0600
	if err != nil {
		return Key{}, perr.Wrap(err, CodeHostKey, "check the data directory's permissions", "cannot write the sandbox host key %s", path)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(hex.EncodeToString(secret) + "\n")
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return Key{}, perr.Wrap(werr, CodeHostKey, "check the data directory's free space", "cannot write the sandbox host key %s", path)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return Key{}, perr.Wrap(err, CodeHostKey, "check the data directory's permissions", "cannot create the sandbox host key %s", path)
	}
	return loadKey(path) // ours, or the one another host created first
}

func loadKey(path string) (Key, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Key{}, err
		}
		return Key{}, perr.Wrap(err, CodeHostKey, "check the file's permissions", "cannot read the sandbox host key %s", path)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Key{}, perr.Wrap(err, CodeHostKey, "", "cannot stat the sandbox host key %s", path)
	}
	if !fi.Mode().IsRegular() {
		return Key{}, perr.New(CodeHostKey, "remove it; a new key is made at start", "the sandbox host key %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return Key{}, perr.New(CodeHostKey, "chmod 600 "+path,
			"the sandbox host key %s has mode %v: others may read it, and whoever reads it can forge sandboxes", path, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return Key{}, perr.New(CodeHostKey, fmt.Sprintf("chown %d %s, or run the sandbox host as its owner", os.Geteuid(), path),
			"the sandbox host key %s belongs to uid %d, not to this process's uid %d", path, st.Uid, os.Geteuid())
	}
	text, err := io.ReadAll(io.LimitReader(f, 4<<10))
	if err != nil {
		return Key{}, perr.Wrap(err, CodeHostKey, "check the file", "cannot read the sandbox host key %s", path)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(text)))
	if err != nil {
		return Key{}, perr.Wrap(err, CodeHostKey, "copy the key file again from another host, or remove it to make a new one (sandboxes sealed with the old key then have to be re-created)",
			"the sandbox host key %s is not hex", path)
	}
	return KeyFromBytes(secret)
}

// sealOf is the seal of info in namespace ns: sealVersion, the key ID and
// an HMAC-SHA256 over every field of info but Seal, each length-prefixed.
func (k Key) sealOf(ns string, info sandbox.Info) string {
	mac := hmac.New(sha256.New, k.secret)
	for _, f := range []string{sealDomain, ns, info.Provider, info.ID, info.Image, info.Workspace, info.Confinement, info.Owner, info.SharedBy} {
		writeField(mac, f)
	}
	return sealVersion + "." + k.id + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func writeField(h hash.Hash, s string) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
	h.Write([]byte(s))
}

// seal returns info owned by owner (shared by sharedBy, or "") with its
// seal.
func (k Key) seal(ns string, info sandbox.Info, owner, sharedBy string) sandbox.Info {
	info.Owner, info.SharedBy = owner, sharedBy
	info.Seal = k.sealOf(ns, info)
	return info
}

// verify checks that info was sealed by this key in namespace ns, unchanged,
// and that run is its owner. Errors: CodeUnsealed (no seal: recorded before
// sealing), CodeForged (bad seal, another key), CodeNotYours (no run, or
// another run's sandbox).
func (k Key) verify(ns string, info sandbox.Info, run string) error {
	if info.Seal == "" {
		return perr.New(sandbox.CodeUnsealed,
			"create a new sandbox (an agent does so by itself and tells the model its environment was reset)",
			"sandbox %s has no seal: it was recorded before sandbox hosts sealed sandboxes (or not made by a sandbox host), so no host serves it", info.ID)
	}
	parts := strings.Split(info.Seal, ".")
	if len(parts) != 3 || parts[0] != sealVersion {
		return perr.New(sandbox.CodeForged, "pass the Info that the sandbox host returned, unchanged",
			"sandbox %s has a malformed seal", info.ID)
	}
	if parts[1] != k.id {
		return perr.New(sandbox.CodeForged,
			"give every sandbox host of namespace "+ns+" the same key file (copy <data dir>/"+KeyFile+", mode 0600), or re-create the sandbox",
			"sandbox %s was sealed with host key %s, but this host holds key %s", info.ID, parts[1], k.id)
	}
	if !hmac.Equal([]byte(info.Seal), []byte(k.sealOf(ns, info))) {
		return perr.New(sandbox.CodeForged, "pass the Info that the sandbox host returned, unchanged",
			"sandbox %s (provider %s, workspace %q, owner %q) does not match its seal: the Info was altered or forged", info.ID, info.Provider, info.Workspace, info.Owner)
	}
	if run == "" {
		return perr.New(sandbox.CodeNotYours, "send the run ID with the request (sandbox.WithRun, or Spec.Owner)",
			"the request for sandbox %s names no run", info.ID)
	}
	if run != info.Owner {
		return perr.New(sandbox.CodeNotYours, "use the sandbox your run created; to let another run use it, share it from the owning run (sandbox.Share)",
			"sandbox %s belongs to run %s, not to run %s", info.ID, info.Owner, run)
	}
	return nil
}
