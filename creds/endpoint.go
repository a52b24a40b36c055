package creds

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"

	"github.com/polos-run/polos/perr"
)

// EndpointFile, in the data directory, tells local programs (the CLI) where
// the polosd that owns the directory listens. Together with the
// credentials next to it, it is how `polos` finds the local polosd with no
// flags for the user who started it.
const EndpointFile = "polosd.json"

// Endpoint is the content of EndpointFile.
type Endpoint struct {
	PID        int      `json:"pid"`
	NATSURL    string   `json:"nats_url"`
	HTTPURL    string   `json:"http_url,omitempty"`
	Namespaces []string `json:"namespaces"`
}

// WriteEndpoint records where the polosd of dataDir listens (mode 0600,
// written atomically).
func WriteEndpoint(dataDir string, e Endpoint) error {
	b, _ := json.MarshalIndent(e, "", "  ")
	path := filepath.Join(dataDir, EndpointFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), FileMode); err != nil {
		return perr.Wrap(err, CodeUnreadable, "choose a writable --data-dir", "cannot write %s", path)
	}
	if err := os.Rename(tmp, path); err != nil {
		return perr.Wrap(err, CodeUnreadable, "choose a writable --data-dir", "cannot write %s", path)
	}
	return nil
}

// RemoveEndpoint removes the endpoint file (at shutdown).
func RemoveEndpoint(dataDir string) { _ = os.Remove(filepath.Join(dataDir, EndpointFile)) }

// ReadEndpoint reads the endpoint of the polosd of dataDir; ok is false
// when there is none, or its process is gone.
func ReadEndpoint(dataDir string) (Endpoint, bool) {
	b, err := os.ReadFile(filepath.Join(dataDir, EndpointFile))
	if err != nil {
		return Endpoint{}, false
	}
	var e Endpoint
	if json.Unmarshal(b, &e) != nil || e.NATSURL == "" {
		return Endpoint{}, false
	}
	if e.PID > 0 && syscall.Kill(e.PID, 0) == syscall.ESRCH {
		return Endpoint{}, false
	}
	return e, true
}
