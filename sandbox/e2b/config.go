package e2b

import (
	"net/http"
	"os"
	"path"
	"strings"
	"time"
)

// Defaults of the E2B provider.
const (
	DefaultDomain     = "e2b.app"
	DefaultTemplate   = "base"
	DefaultTimeoutSec = 300          // sandbox lifetime when Spec.TimeoutSec is 0
	DefaultWorkspace  = "/home/user" // relative paths and exec cwd resolve here

	// DefaultRequestTimeout bounds every REST and unary envd call (the SDK's
	// REQUEST_TIMEOUT); streaming exec calls are bounded by the exec timeout.
	DefaultRequestTimeout = 60 * time.Second

	// keepaliveIntervalSec asks envd for a keepalive event on quiet streams
	// (the SDK's value), so idle-connection reapers never cut a long exec.
	keepaliveIntervalSec = "50"

	// execGrace is how long past the exec timeout the client waits for envd
	// to end the stream itself before it kills the process on its own.
	execGrace = 30 * time.Second

	// killTimeout bounds the SendSignal and tree-cleanup calls made after a
	// timeout or a cancellation (they run on a fresh context).
	killTimeout = 15 * time.Second

	// walkDepthPerCall is how many directory levels one ListDir call returns;
	// deeper directories are listed by further calls, so a Walk that skips a
	// directory never pays for its subtree below this depth.
	walkDepthPerCall = 4

	userAgent = "polos-e2b/1"
)

// Environment variables read by ConfigFromEnv.
const (
	EnvAPIKey     = "E2B_API_KEY"
	EnvDomain     = "E2B_DOMAIN"
	EnvAPIURL     = "E2B_API_URL"
	EnvSandboxURL = "E2B_SANDBOX_URL" // envd base URL override (tests, self-hosting)
)

// Config configures the E2B provider. Zero fields take the defaults above.
type Config struct {
	APIKey string // sent as X-API-Key; required
	Domain string // default DefaultDomain
	APIURL string // default https://api.<Domain>
	// EnvdURL, when set, replaces the per-sandbox envd URL
	// https://49983-<id>.<domain>; the sandbox is then picked by the
	// E2b-Sandbox-Id header, as on E2B's shared host.
	EnvdURL string
	// User is the sandbox user commands and files run as; empty means envd's
	// default user ("user" on E2B templates). Sandboxes with envd < 0.4.0
	// always get "user", which they require.
	User string
	// Workspace is the directory relative paths resolve against and exec
	// starts in; default DefaultWorkspace, the user's home on E2B templates.
	Workspace      string
	HTTPClient     *http.Client  // default: a client without an overall timeout
	RequestTimeout time.Duration // default DefaultRequestTimeout
}

// ConfigFromEnv reads E2B_API_KEY, E2B_DOMAIN, E2B_API_URL and
// E2B_SANDBOX_URL.
func ConfigFromEnv() Config {
	return Config{
		APIKey:  strings.TrimSpace(os.Getenv(EnvAPIKey)),
		Domain:  os.Getenv(EnvDomain),
		APIURL:  os.Getenv(EnvAPIURL),
		EnvdURL: os.Getenv(EnvSandboxURL),
	}
}

func (c Config) withDefaults() Config {
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	if c.APIURL == "" {
		c.APIURL = "https://api." + c.Domain
	}
	c.APIURL = strings.TrimRight(c.APIURL, "/")
	c.EnvdURL = strings.TrimRight(c.EnvdURL, "/")
	if c.Workspace == "" {
		c.Workspace = DefaultWorkspace
	}
	c.Workspace = path.Clean(c.Workspace)
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	return c
}
