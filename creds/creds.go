// Package creds keeps the identities polosd issues: one NATS nkey user per
// (namespace, role), created at first start in the data directory, and the
// key of the HTTP API. It renders the NATS server configuration that grants
// each identity its role's permissions (protocol.RolePermissions), for the
// embedded server and, as text, for an external server or cluster.
//
// Layout (directories 0700, files 0600):
//
//	<data-dir>/creds/<namespace>/<name>.nk   one identity: a commented header and its nkey seed
//	<data-dir>/creds/http.key                the HTTP API key
//
// A seed file is a credential: whoever can read it acts as that identity.
// Open refuses a directory other users can read, and the local sandbox
// confines the agent's commands so they cannot read it.
package creds

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// Layout and modes.
const (
	DirName     = "creds" // under the data directory
	SeedExt     = ".nk"
	HTTPKeyFile = "http.key"
	DirMode     = 0o700
	FileMode    = 0o600
	// HTTPKeyBytes is the entropy of a generated HTTP API key.
	HTTPKeyBytes = 32
)

// Error codes.
const (
	CodeUnreadable perr.Code = "CREDS_UNREADABLE" // missing, unreadable or malformed credentials
	CodeExposed    perr.Code = "CREDS_EXPOSED"    // the credentials directory is readable by other users
	CodeBadName    perr.Code = "CREDS_BAD_NAME"   // an identity name or namespace that cannot be a subject token
	CodeExists     perr.Code = "CREDS_EXISTS"     // adding an identity that already exists
)

// Identity is one credential: who it is, not its secret.
type Identity struct {
	Namespace string        `json:"namespace"`
	Name      string        `json:"name"`
	Role      protocol.Role `json:"role"`
	PublicKey string        `json:"public_key"`
}

// String names the identity as decisions record it: "<role>:<name>".
func (id Identity) String() string { return string(id.Role) + ":" + id.Name }

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func checkName(kind, s string) error {
	if !namePattern.MatchString(s) {
		return perr.New(CodeBadName, "use 1-64 characters from A-Z a-z 0-9 _ -", "%s %q is not valid", kind, s)
	}
	return nil
}

// Store is a directory of identities.
type Store struct{ dir string }

// Open returns the store in dir, creating it (mode 0700) if missing. A
// directory that group or others can access is tightened to 0700 when we
// own it, and refused otherwise.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return nil, perr.Wrap(err, CodeUnreadable, "choose a writable --data-dir", "cannot create the credentials directory %s", dir)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, perr.Wrap(err, CodeUnreadable, "", "cannot read the credentials directory %s", dir)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, DirMode); err != nil {
			return nil, perr.Wrap(err, CodeExposed, "chmod 700 "+dir,
				"the credentials directory %s has mode %v: other users could read polosd's credentials", dir, st.Mode().Perm())
		}
	}
	return &Store{dir: dir}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// File is the path of an identity's seed file.
func (s *Store) File(ns, name string) string { return filepath.Join(s.dir, ns, name+SeedExt) }

// Ensure makes sure every namespace has one identity per role, named after
// the role (server, executor, sandbox, operator, observer), creating what is
// missing, and returns every identity in the store.
func (s *Store) Ensure(namespaces []string) ([]Identity, error) {
	for _, ns := range namespaces {
		if err := checkName("namespace", ns); err != nil {
			return nil, err
		}
		for _, r := range protocol.Roles {
			if _, err := os.Stat(s.File(ns, string(r))); err == nil {
				continue
			}
			if _, err := s.Add(ns, string(r), r); err != nil && perr.CodeOf(err) != CodeExists {
				return nil, err
			}
		}
	}
	return s.List()
}

// Add creates a new identity of role in namespace ns. It fails with
// CodeExists when the name is taken (identities are never overwritten: a
// running client would lose its credential).
func (s *Store) Add(ns, name string, role protocol.Role) (Identity, error) {
	if err := checkName("namespace", ns); err != nil {
		return Identity{}, err
	}
	if err := checkName("identity name", name); err != nil {
		return Identity{}, err
	}
	if !protocol.ValidRole(role) {
		return Identity{}, perr.New(CodeBadName, "use one of server, executor, sandbox, operator, observer", "unknown role %q", role)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return Identity{}, perr.Wrap(err, CodeUnreadable, "", "cannot create a key pair")
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	id := Identity{Namespace: ns, Name: name, Role: role, PublicKey: pub}
	if err := os.MkdirAll(filepath.Join(s.dir, ns), DirMode); err != nil {
		return Identity{}, perr.Wrap(err, CodeUnreadable, "", "cannot create %s", filepath.Join(s.dir, ns))
	}
	path := s.File(ns, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, FileMode)
	if errors.Is(err, fs.ErrExist) {
		return Identity{}, perr.New(CodeExists, "pick another name, or delete "+path+" first", "identity %s of namespace %s exists", name, ns)
	}
	if err != nil {
		return Identity{}, perr.Wrap(err, CodeUnreadable, "", "cannot create %s", path)
	}
	_, werr := f.Write(encode(id, seed))
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		_ = os.Remove(path)
		return Identity{}, perr.Wrap(err, CodeUnreadable, "check the disk", "cannot write %s", path)
	}
	return id, nil
}

// List returns every identity in the store, sorted by namespace, role and
// name. A file that cannot be parsed is an error naming it.
func (s *Store) List() ([]Identity, error) {
	var out []Identity
	nsDirs, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, perr.Wrap(err, CodeUnreadable, "", "cannot list %s", s.dir)
	}
	for _, d := range nsDirs {
		if !d.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(s.dir, d.Name()))
		if err != nil {
			return nil, perr.Wrap(err, CodeUnreadable, "", "cannot list %s", filepath.Join(s.dir, d.Name()))
		}
		for _, f := range files {
			if f.IsDir() || !strings.HasSuffix(f.Name(), SeedExt) {
				continue
			}
			c, err := Load(filepath.Join(s.dir, d.Name(), f.Name()))
			if err != nil {
				return nil, err
			}
			out = append(out, c.Identity)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Role != b.Role {
			return roleRank(a.Role) < roleRank(b.Role)
		}
		return a.Name < b.Name
	})
	return out, nil
}

func roleRank(r protocol.Role) int {
	for i, x := range protocol.Roles {
		if x == r {
			return i
		}
	}
	return len(protocol.Roles)
}

// HTTPKey returns the HTTP API key, generating it at first use.
func (s *Store) HTTPKey() (string, error) {
	path := filepath.Join(s.dir, HTTPKeyFile)
	if b, err := os.ReadFile(path); err == nil {
		if k := strings.TrimSpace(string(b)); len(k) >= 2*HTTPKeyBytes {
			return k, nil
		}
	}
	raw := make([]byte, HTTPKeyBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", perr.Wrap(err, CodeUnreadable, "", "no randomness for the HTTP API key")
	}
	key := "polos_" + hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(key+"\n"), FileMode); err != nil {
		return "", perr.Wrap(err, CodeUnreadable, "choose a writable --data-dir", "cannot write %s", path)
	}
	return key, nil
}

// HTTPKeyPath is where HTTPKey keeps the key.
func (s *Store) HTTPKeyPath() string { return filepath.Join(s.dir, HTTPKeyFile) }

// Header lines of a seed file.
const (
	hdrNamespace = "# namespace: "
	hdrRole      = "# role: "
	hdrName      = "# name: "
)

func encode(id Identity, seed []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Polos identity issued by polosd. Whoever reads this file acts as it: keep it mode 0600.\n")
	fmt.Fprintf(&b, "%s%s\n%s%s\n%s%s\n", hdrNamespace, id.Namespace, hdrRole, id.Role, hdrName, id.Name)
	fmt.Fprintf(&b, "# public key: %s\n", id.PublicKey)
	b.Write(seed)
	b.WriteByte('\n')
	return b.Bytes()
}
