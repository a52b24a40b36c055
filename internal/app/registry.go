package app

import (
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/config"
	"github.com/polos-run/polos/examples/demo"
	"github.com/polos-run/polos/examples/multiagent"
	"github.com/polos-run/polos/protocol"
	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/dispatch"
)

// Deps is what workflows need from the daemon.
type Deps struct {
	NC        *nats.Conn
	JS        jetstream.JetStream
	Namespace string
	// Sandboxes maps a provider name (local, docker, e2b) to a
	// sandbox.Provider that reaches that provider's sandbox hosts over NATS
	// (dispatch.NewClient). A provider with no host answers CodeUnavailable.
	Sandboxes map[string]sandbox.Provider
	// WorkspaceRoot is the directory under which runs get workspaces when
	// their configuration names none (<data dir>/workspaces).
	WorkspaceRoot string
	Logger        *slog.Logger
}

// NewDeps builds Deps over a connection: one dispatch client per known
// sandbox provider.
func NewDeps(nc *nats.Conn, js jetstream.JetStream, ns, workspaceRoot string, log *slog.Logger) (Deps, error) {
	d := Deps{NC: nc, JS: js, Namespace: ns, Sandboxes: map[string]sandbox.Provider{}, WorkspaceRoot: workspaceRoot, Logger: log}
	for _, name := range []string{sandbox.ProviderLocal, sandbox.ProviderDocker, sandbox.ProviderE2B} {
		c, err := dispatch.NewClient(nc, ns, name)
		if err != nil {
			return d, err
		}
		d.Sandboxes[name] = c
	}
	return d, nil
}

// Registry is the single place polosd gets its workflows from: the
// built-in demo and one workflow per agent of cfg.Agents. Every executor of
// every polosd serving a namespace must build the same registry. It also
// returns what executors advertise about each workflow (queue, limit).
func Registry(cfg *config.Config, deps Deps) (*polos.Registry, []protocol.WorkflowMeta, error) {
	reg := polos.NewRegistry()
	demo.Register(reg, demo.Deps{Sandbox: deps.Sandboxes[sandbox.ProviderLocal], WorkspaceRoot: deps.WorkspaceRoot})
	metas := []protocol.WorkflowMeta{{Name: "demo", Kind: "workflow"}}
	ad, err := agentDeps(cfg, deps)
	if err != nil {
		return nil, nil, err
	}
	if err := multiagent.Register(reg, ad, deps.WorkspaceRoot); err != nil {
		return nil, nil, err
	}
	for _, n := range []string{multiagent.Workflow, multiagent.Planner, multiagent.Coder, multiagent.Tester} {
		metas = append(metas, protocol.WorkflowMeta{Name: n, Kind: "example"})
	}
	agents, err := registerAgents(reg, cfg, deps, ad)
	if err != nil {
		return nil, nil, err
	}
	return reg, append(metas, agents...), nil
}
