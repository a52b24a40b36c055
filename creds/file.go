package creds

import (
	"bufio"
	"bytes"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// File is a loaded credential: the identity it stands for and how to
// connect as it.
type File struct {
	Identity
	Path string
	// JWT is set for a NATS .creds file issued outside Polos (JWT and
	// seed); its Namespace, Name and Role are what the caller said.
	JWT  bool
	seed []byte
}

// jwtMarker starts the JWT block of a NATS .creds file.
var jwtMarker = []byte("-----BEGIN NATS USER JWT-----")

// Load reads a seed file written by Store.Add, or a NATS .creds file (then
// the identity is unknown: Namespace and Role are empty, Name is
// "operator" until the caller sets them).
func Load(path string) (File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return File{}, perr.Wrap(err, CodeUnreadable, "pass the file polosd wrote under <data-dir>/creds/<namespace>/, or a NATS .creds file",
			"cannot read credentials %s", path)
	}
	if bytes.Contains(b, jwtMarker) {
		return File{Identity: Identity{Name: string(protocol.RoleOperator), Role: protocol.RoleOperator}, Path: path, JWT: true}, nil
	}
	f := File{Path: path}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, hdrNamespace):
			f.Namespace = strings.TrimPrefix(line, hdrNamespace)
		case strings.HasPrefix(line, hdrRole):
			f.Role = protocol.Role(strings.TrimPrefix(line, hdrRole))
		case strings.HasPrefix(line, hdrName):
			f.Name = strings.TrimPrefix(line, hdrName)
		case strings.HasPrefix(line, "SU"):
			f.seed = []byte(line)
		}
	}
	bad := func(what string) (File, error) {
		return File{}, perr.New(CodeUnreadable, "restore the file, or delete it and restart polosd to issue a new one",
			"credentials %s are malformed: %s", path, what)
	}
	if f.seed == nil {
		return bad("no nkey user seed")
	}
	kp, err := nkeys.FromSeed(f.seed)
	if err != nil {
		return bad("the seed does not parse")
	}
	if f.PublicKey, err = kp.PublicKey(); err != nil {
		return bad("no public key")
	}
	if f.Namespace == "" || f.Name == "" || !protocol.ValidRole(f.Role) {
		return bad("the header lacks namespace, role or name")
	}
	return f, nil
}

// NATSOptions connect as the file's identity: its key (or the .creds
// file) and its role's reply-inbox prefix, the only inbox its permissions
// let it subscribe to.
func (f File) NATSOptions() []nats.Option {
	var opts []nats.Option
	if f.JWT {
		opts = append(opts, nats.UserCredentials(f.Path))
	} else {
		seed := f.seed
		opts = append(opts, nats.Nkey(f.PublicKey, func(nonce []byte) ([]byte, error) {
			kp, err := nkeys.FromSeed(seed)
			if err != nil {
				return nil, err
			}
			defer kp.Wipe()
			return kp.Sign(nonce)
		}))
	}
	if f.Role != "" {
		opts = append(opts, nats.CustomInboxPrefix(protocol.InboxPrefix(f.Role)))
	}
	return opts
}
