package docker

import (
	"os"
	"testing"

	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/sandboxtest"
)

// The shared conformance suite, with a bind-mounted host workspace (the
// seeds' workspace_dir). The tmpfs workspace (no workspace_dir) runs the
// same in-container code and is covered by the other tests; running the
// suite twice would double this package's test time on a 2-core machine.
// POLOS_TEST_IMAGE runs it on another image, e.g. polos/node:20 (dash and
// GNU tools instead of busybox).
func TestConformance(t *testing.T) {
	t.Parallel()
	sandboxtest.Run(t, func(t *testing.T) (sandbox.Provider, sandbox.Spec) {
		spec := testSpec(t)
		if img := os.Getenv("POLOS_TEST_IMAGE"); img != "" {
			spec.Image = img
		}
		spec.WorkspaceDir = hostWorkspace(t)
		return newTestProvider(t, Options{}), spec
	})
}
