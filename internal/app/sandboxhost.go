package app

import (
	"path/filepath"
	"slices"

	"github.com/polos-run/polos/config"
	"github.com/polos-run/polos/sandbox/dispatch"
	"github.com/polos-run/polos/sandbox/docker"
)

// SandboxHostOptions are the options of this daemon's sandbox host (ADR
// 0112): the host key in <dataDir>/sandbox-host.key (made on the first
// start, mode 0600; every sandbox host of the namespace must hold the same
// file), and a Policy taken from the trusted polos.yaml, never from a
// request: the workspace roots are <dataDir>/workspaces plus every
// directory an agent's sandbox config names (sandbox.local.cwd,
// sandbox.docker.workspace_dir); the images, templates and networks are
// those the agents name, plus the docker provider's default image.
func SandboxHostOptions(cfg *config.Config, ns, dataDir string) (dispatch.HostOptions, error) {
	key, err := dispatch.LoadOrCreateKey(filepath.Join(dataDir, dispatch.KeyFile))
	if err != nil {
		return dispatch.HostOptions{}, err
	}
	return dispatch.HostOptions{Namespace: ns, Key: key, Policy: HostPolicy(cfg, dataDir)}, nil
}

// HostPolicy is the sandbox host's Policy for cfg (see SandboxHostOptions).
// Agents whose config does not build are skipped here: Registry reports
// them.
func HostPolicy(cfg *config.Config, dataDir string) dispatch.Policy {
	root := filepath.Join(dataDir, "workspaces")
	pol := dispatch.Policy{WorkspaceRoots: []string{root}, Images: []string{docker.DefaultImage}}
	add := func(list *[]string, v string) {
		if v != "" && !slices.Contains(*list, v) {
			*list = append(*list, v)
		}
	}
	if cfg == nil {
		return pol
	}
	for _, a := range cfg.Agents {
		ac, err := AgentConfig(cfg, a, root)
		if err != nil {
			continue
		}
		s := ac.Sandbox.Spec
		add(&pol.WorkspaceRoots, s.WorkspaceDir)
		add(&pol.Images, s.Image)
		add(&pol.Templates, s.Template)
		if s.Network != "none" {
			add(&pol.Networks, s.Network)
		}
		for k := range s.Env {
			add(&pol.Env, k)
		}
	}
	return pol
}
