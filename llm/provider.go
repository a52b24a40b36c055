package llm

import (
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/polos-run/polos/perr"
)

// Provider names accepted by New.
const (
	ProviderAnthropic = "anthropic"
	ProviderOpenAI    = "openai"
	ProviderScripted  = "scripted"
)

// ProvidersImport is the package that links every built-in provider into a
// binary; New says to import it when a known provider is not registered.
const ProvidersImport = "github.com/polos-run/polos/llm/providers"

// ProviderConfig selects and configures a model.
type ProviderConfig struct {
	Provider string // "anthropic", "openai" or "scripted"
	Model    string // default model name for requests whose Model is empty
	BaseURL  string // API base URL; empty means the provider's env var, then its default
	APIKey   string // empty means the provider's env var (ANTHROPIC_API_KEY, OPENAI_API_KEY)
	Script   string // path of the YAML script (scripted provider only)
}

// Factory builds a Model from a config. It returns a CodeBadConfig error for
// a config it cannot use (missing key, missing script...).
type Factory func(ProviderConfig) (Model, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]Factory{}
)

// Register makes a provider available to New. Provider packages call it from
// init, so importing a provider package (or ProvidersImport for all of them)
// is what makes it usable; package llm cannot import them itself because
// they import llm. Registering the same name twice panics: it is a
// programming error.
func Register(name string, f Factory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("llm: provider registered twice: " + name)
	}
	registry[name] = f
}

// New returns the Model cfg describes. Unknown providers and configs the
// provider rejects are CodeBadConfig errors saying what to change.
func New(cfg ProviderConfig) (Model, error) {
	registryMu.RLock()
	f, ok := registry[cfg.Provider]
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	registryMu.RUnlock()
	if ok {
		return f(cfg)
	}
	slices.Sort(names)
	known := []string{ProviderAnthropic, ProviderOpenAI, ProviderScripted}
	if slices.Contains(known, cfg.Provider) {
		return nil, perr.New(CodeBadConfig,
			"import _ \""+ProvidersImport+"\" in the binary that builds models",
			"provider %q is known but not linked into this program (registered: %s)",
			cfg.Provider, listOrNone(names))
	}
	return nil, perr.New(CodeBadConfig,
		"set provider to one of: "+strings.Join(known, ", "),
		"unknown LLM provider %q", cfg.Provider)
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// ResolveAPIKey returns explicit if set, else the value of envVar. With
// neither it returns a CodeBadConfig error telling which env var to set.
func ResolveAPIKey(provider, explicit, envVar string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if v := strings.TrimSpace(os.Getenv(envVar)); v != "" {
		return v, nil
	}
	return "", perr.New(CodeBadConfig,
		"export "+envVar+"=<your key>, or set the API key in the provider config",
		"provider %q needs an API key and none was given", provider)
}

// ResolveString returns explicit if set, else the value of envVar (may be empty).
func ResolveString(explicit, envVar string) string {
	if explicit != "" {
		return explicit
	}
	return strings.TrimSpace(os.Getenv(envVar))
}
