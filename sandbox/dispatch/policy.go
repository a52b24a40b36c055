package dispatch

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// Networks a Spec may always ask for: the provider's default and none.
var alwaysAllowedNetworks = []string{"", "none"}

// Policy is what a sandbox host lets a create Spec ask for: the host's own
// configuration decides, never the request. Every field of a Spec that
// reaches a mount, a path or a privilege is checked: workspace_dir (a host
// directory: the local sandbox's root, docker's bind mount), image,
// template, network and env. Resource limits (memory, cpus, pids_limit,
// timeout_sec) are not: the providers validate them. A Spec asking for
// anything else is refused with CodeNotAllowed, naming what was asked and
// how to allow it.
//
// The zero Policy allows no workspace_dir (so no local sandbox), only the
// providers' default image and template, no network and no env.
type Policy struct {
	// WorkspaceRoots are the host directories a workspace_dir may be, or
	// lie under. Both sides are compared with symlinks resolved (the deepest
	// existing ancestor of a path that does not exist yet), so a symlink
	// inside a root cannot lead a workspace out of it. polosd: the data
	// directory's workspaces/ plus the directories polos.yaml names.
	WorkspaceRoots []string
	// Images are the docker images a Spec may name, exactly as written
	// ("polos/node:20"); an empty image (the provider's default) is always
	// allowed.
	Images []string
	// Templates are the e2b templates a Spec may name; empty (the
	// provider's default) is always allowed.
	Templates []string
	// Networks are the networks a Spec may ask for besides "" and "none"
	// (docker: "bridge").
	Networks []string
	// Env are the names of the Spec.Env variables a Spec may set (the
	// sandbox-wide environment; exec requests carry their own).
	Env []string
}

// checkCreate checks a create Spec for provider and returns it with
// workspace_dir replaced by its resolved path (what the provider must use:
// the path that was checked).
func (p Policy) checkCreate(provider string, spec sandbox.Spec) (sandbox.Spec, error) {
	if spec.Provider != "" && spec.Provider != provider {
		return spec, perr.New(sandbox.CodeBadRequest, "send the request to the subject of the spec's provider",
			"the spec is for provider %q, but the request came for %q", spec.Provider, provider)
	}
	if spec.WorkspaceDir != "" {
		dir, err := p.checkWorkspace(spec.WorkspaceDir)
		if err != nil {
			return spec, err
		}
		spec.WorkspaceDir = dir
	}
	if spec.Image != "" && !slices.Contains(p.Images, spec.Image) {
		return spec, notAllowed("image", spec.Image, append([]string{"the provider's default"}, p.Images...),
			"name it in an agent's sandbox.docker.image in polos.yaml, or in the sandbox host's Policy.Images")
	}
	if spec.Template != "" && !slices.Contains(p.Templates, spec.Template) {
		return spec, notAllowed("template", spec.Template, append([]string{"the provider's default"}, p.Templates...),
			"name it in an agent's sandbox.e2b.template in polos.yaml, or in the sandbox host's Policy.Templates")
	}
	if !slices.Contains(alwaysAllowedNetworks, spec.Network) && !slices.Contains(p.Networks, spec.Network) {
		return spec, notAllowed("network", spec.Network, append([]string{"none"}, p.Networks...),
			"name it in an agent's sandbox.docker.network in polos.yaml, or in the sandbox host's Policy.Networks")
	}
	return spec, p.checkEnv(spec.Env)
}

// openSpec is what the host passes a provider with an existing sandbox:
// only the fields a provider may use then, with env checked. The Info,
// sealed, says everything else.
func (p Policy) openSpec(provider string, spec sandbox.Spec) (sandbox.Spec, error) {
	if err := p.checkEnv(spec.Env); err != nil {
		return sandbox.Spec{}, err
	}
	return sandbox.Spec{Provider: provider, Owner: spec.Owner, Scope: spec.Scope, Env: spec.Env}, nil
}

func (p Policy) checkEnv(env map[string]string) error {
	var refused []string
	for k := range env {
		if !slices.Contains(p.Env, k) {
			refused = append(refused, k)
		}
	}
	if len(refused) == 0 {
		return nil
	}
	slices.Sort(refused)
	return notAllowed("env variable", strings.Join(refused, ", "), p.Env,
		"set it in the exec request's env instead, or allow the name in the sandbox host's Policy.Env")
}

// checkWorkspace resolves dir and checks that it is one of the workspace
// roots or lies under one.
func (p Policy) checkWorkspace(dir string) (string, error) {
	if strings.IndexByte(dir, 0) >= 0 || !filepath.IsAbs(dir) || slices.Contains(strings.Split(filepath.ToSlash(dir), "/"), "..") {
		return "", perr.New(sandbox.CodeBadRequest, "give workspace_dir as an absolute host path without \"..\"",
			"workspace_dir %q is not a clean absolute path", dir)
	}
	real, err := resolveExisting(dir)
	if err != nil {
		return "", perr.Wrap(err, sandbox.CodeBadRequest, "check the directory", "cannot resolve workspace_dir %q", dir)
	}
	for _, root := range p.WorkspaceRoots {
		r, err := resolveExisting(filepath.Clean(root))
		if err == nil && within(r, real) {
			return real, nil
		}
	}
	shown := dir
	if real != filepath.Clean(dir) {
		shown += " (" + real + " with symlinks resolved)"
	}
	return "", notAllowed("workspace_dir", shown, p.WorkspaceRoots,
		"put the workspace under one of the allowed roots, or allow its directory: name it in an agent's sandbox config in polos.yaml (sandbox.local.cwd, sandbox.docker.workspace_dir), or in the sandbox host's Policy.WorkspaceRoots")
}

// resolveExisting returns the absolute, clean path with every symlink of
// its deepest existing ancestor resolved; the rest of the path does not
// exist yet, so it holds no symlink.
func resolveExisting(p string) (string, error) {
	p = filepath.Clean(p)
	rest := ""
	for {
		if _, err := os.Lstat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	return filepath.Join(real, rest), nil
}

// within reports whether p is root or below it (both clean and absolute).
func within(root, p string) bool {
	return p == root || root == "/" || strings.HasPrefix(p, root+"/")
}

func notAllowed(what, asked string, allowed []string, fix string) error {
	list := "none"
	if len(allowed) > 0 {
		list = strings.Join(allowed, ", ")
	}
	return perr.New(sandbox.CodeNotAllowed, fix,
		"this sandbox host does not allow %s %s (allowed: %s)", what, asked, list)
}
