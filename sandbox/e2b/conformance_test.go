package e2b_test

import (
	"testing"

	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/e2b"
	"github.com/polos-run/polos/sandbox/e2b/e2bfake"
	"github.com/polos-run/polos/sandbox/sandboxtest"
)

// startFake starts a fake E2B and a provider configured against it.
func startFake(t testing.TB, opts e2bfake.Options) (*e2bfake.Server, *e2b.Provider) {
	t.Helper()
	srv, err := e2bfake.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv, e2b.NewProvider(e2b.Config{APIKey: srv.APIKey(), APIURL: srv.URL, EnvdURL: srv.URL})
}

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, func(t *testing.T) (sandbox.Provider, sandbox.Spec) {
		srv, p := startFake(t, e2bfake.Options{})
		if !srv.Namespaces() {
			t.Log("e2bfake: no mount namespaces here; commands see the host filesystem")
		}
		return p, sandbox.Spec{Provider: sandbox.ProviderE2B, Owner: "conformance"}
	})
}
