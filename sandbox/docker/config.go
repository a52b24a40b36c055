package docker

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/polos-run/polos/images"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// Container labels. Every container the provider creates carries all four;
// Sweep and ReapIdle only ever touch containers with LabelManaged=true and
// this provider's LabelHost.
const (
	LabelManaged = "polos.managed"
	LabelOwner   = "polos.owner"
	LabelScope   = "polos.scope"
	LabelHost    = "polos.host"
)

// Scopes (Spec.Scope).
const (
	ScopeRun     = "run"
	ScopeSession = "session"
)

// Networks (Spec.Network).
const (
	NetworkNone   = "none"
	NetworkBridge = "bridge"
)

// Defaults applied when the Spec or Options leave a field empty.
const (
	DefaultImage         = images.NodeRef
	DefaultUser          = "1000:1000" // numeric uid:gid; never root
	DefaultMemory        = "2g"
	DefaultCPUs          = 1.0
	DefaultPidsLimit     = 512
	DefaultTmpSize       = "256m" // tmpfs on /tmp (counts against Memory)
	DefaultWorkspaceSize = "1g"   // tmpfs on /workspace when no WorkspaceDir is given
	WorkspacePath        = images.WorkspaceDir
	// DefaultHome is HOME inside the container: the root filesystem is
	// read-only, so the only writable places are /workspace and /tmp.
	DefaultHome = "/tmp"
	// MinMemoryBytes is the smallest memory limit the engine accepts.
	MinMemoryBytes = 6 << 20
)

// idleCommand is the container's main process: it sleeps forever (about 68
// years) while docker-init (HostConfig.Init) as PID 1 reaps the zombies that
// commands leave behind. Both GNU and busybox sleep accept it.
var idleCommand = []string{"sleep", "2147483647"}

// settings are the validated, defaulted fields of a Spec.
type settings struct {
	image, owner, scope, network, workspaceDir string
	memory, nanoCPUs, pidsLimit                int64
	uid, gid                                   int
	env                                        []string
}

// resolveSpec validates spec and fills in defaults. user is "uid:gid".
func resolveSpec(spec sandbox.Spec, user, defaultImage string) (settings, error) {
	s := settings{image: spec.Image, owner: spec.Owner, scope: spec.Scope, network: spec.Network, workspaceDir: spec.WorkspaceDir}
	if s.owner == "" {
		return s, perr.New(sandbox.CodeBadRequest, "set Spec.Owner to the run or session id", "a docker sandbox needs an owner, got none")
	}
	if s.image == "" {
		s.image = defaultImage
	}
	switch s.scope {
	case "":
		s.scope = ScopeRun
	case ScopeRun, ScopeSession:
	default:
		return s, perr.New(sandbox.CodeBadRequest, `use "run" or "session"`, "unknown sandbox scope %q", s.scope)
	}
	switch s.network {
	case "":
		s.network = NetworkNone
	case NetworkNone, NetworkBridge:
	default:
		return s, perr.New(sandbox.CodeBadRequest, `use "none" (default) or "bridge"`, "unsupported docker network %q", s.network)
	}
	if s.workspaceDir != "" && !strings.HasPrefix(s.workspaceDir, "/") {
		return s, perr.New(sandbox.CodeBadRequest, "give workspace_dir as an absolute host path", "workspace_dir %q is relative", s.workspaceDir)
	}
	var err error
	if s.uid, s.gid, err = parseUser(user); err != nil {
		return s, err
	}
	mem := spec.Memory
	if mem == "" {
		mem = DefaultMemory
	}
	if s.memory, err = ParseMemory(mem); err != nil {
		return s, err
	}
	cpus := spec.CPUs
	if cpus == 0 {
		cpus = DefaultCPUs
	}
	if !(cpus > 0) || math.IsInf(cpus, 0) || cpus > 1024 {
		return s, perr.New(sandbox.CodeBadRequest, "give cpus as a positive number such as 1 or 0.5", "invalid cpus %v", spec.CPUs)
	}
	s.nanoCPUs = int64(math.Round(cpus * 1e9))
	s.pidsLimit = spec.PidsLimit
	if s.pidsLimit == 0 {
		s.pidsLimit = DefaultPidsLimit
	}
	if s.pidsLimit < 0 {
		return s, perr.New(sandbox.CodeBadRequest, "give a positive pids_limit or leave it unset", "invalid pids_limit %d", s.pidsLimit)
	}
	if s.env, err = envList(spec.Env); err != nil {
		return s, err
	}
	return s, nil
}

// containerConfig turns validated settings into the engine's create request:
// non-root user, every capability dropped, no-new-privileges, read-only root
// filesystem, writable /workspace and /tmp, limits on memory (swap off),
// CPU and pids, no network unless "bridge", docker-init as PID 1.
func containerConfig(s settings, hostID string) (*container.Config, *container.HostConfig) {
	env := append([]string{"HOME=" + DefaultHome}, s.env...)
	cfg := &container.Config{
		Image:      s.image,
		User:       fmt.Sprintf("%d:%d", s.uid, s.gid),
		Entrypoint: idleCommand[:1],
		Cmd:        idleCommand[1:],
		WorkingDir: WorkspacePath,
		Env:        env,
		Labels: map[string]string{
			LabelManaged: "true",
			LabelOwner:   s.owner,
			LabelScope:   s.scope,
			LabelHost:    hostID,
		},
	}
	pids := s.pidsLimit
	init := true
	hc := &container.HostConfig{
		NetworkMode:    container.NetworkMode(s.network),
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: true,
		Init:           &init,
		Resources: container.Resources{
			Memory:     s.memory,
			MemorySwap: s.memory, // equal to Memory: no swap
			NanoCPUs:   s.nanoCPUs,
			PidsLimit:  &pids,
		},
		Tmpfs: map[string]string{
			"/tmp": "rw,exec,nosuid,nodev,mode=1777,size=" + DefaultTmpSize,
		},
	}
	if s.workspaceDir != "" {
		hc.Mounts = []mount.Mount{{Type: mount.TypeBind, Source: s.workspaceDir, Target: WorkspacePath}}
	} else {
		hc.Tmpfs[WorkspacePath] = fmt.Sprintf("rw,exec,nosuid,nodev,mode=0755,uid=%d,gid=%d,size=%s", s.uid, s.gid, DefaultWorkspaceSize)
	}
	return cfg, hc
}

// containerName is readable in `docker ps` and unique: polos-<owner>-<hex>.
func containerName(owner string) string {
	var b strings.Builder
	for _, r := range owner {
		if b.Len() >= 40 {
			break
		}
		if r < 128 && (r == '_' || r == '.' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return "polos-" + b.String() + "-" + hex.EncodeToString(rnd[:])
}

// parseUser accepts a numeric "uid:gid" with a non-zero uid.
func parseUser(user string) (uid, gid int, err error) {
	fix := `use a numeric non-root "uid:gid" such as "1000:1000"`
	u, g, ok := strings.Cut(user, ":")
	if !ok {
		return 0, 0, perr.New(sandbox.CodeBadRequest, fix, "container user %q has no group", user)
	}
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return 0, 0, perr.New(sandbox.CodeBadRequest, fix, "container user %q is not numeric", user)
	}
	if uid == 0 {
		return 0, 0, perr.New(sandbox.CodeBadRequest, fix, "container user %q is root", user)
	}
	return uid, gid, nil
}

// envList validates names (shell identifiers) and values (no NUL) and
// returns NAME=VALUE pairs sorted by name.
func envList(env map[string]string) ([]string, error) {
	out := make([]string, 0, len(env))
	for k, v := range env {
		if !isEnvName(k) {
			return nil, perr.New(sandbox.CodeBadRequest, "use names made of letters, digits and _, not starting with a digit", "invalid environment variable name %q", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, perr.New(sandbox.CodeBadRequest, "remove the NUL byte", "environment variable %s contains a NUL byte", k)
		}
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out, nil
}

func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// ParseMemory parses a memory size as written in sandbox specs: a number
// with an optional binary unit b, k, m, g or t (case-insensitive, optionally
// followed by "b" or "ib"): "2g", "512m", "1.5G", "2GiB", "1073741824".
// It rejects sizes under MinMemoryBytes and above 2^53 bytes.
func ParseMemory(s string) (int64, error) {
	fix := `write a size such as "512m" or "2g"`
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "ib"), "b")
	if t == "" {
		return 0, perr.New(sandbox.CodeBadRequest, fix, "invalid memory size %q", s)
	}
	mult := 1.0
	switch t[len(t)-1] {
	case 'k':
		mult = 1 << 10
	case 'm':
		mult = 1 << 20
	case 'g':
		mult = 1 << 30
	case 't':
		mult = 1 << 40
	}
	if mult != 1 {
		t = strings.TrimSpace(t[:len(t)-1])
	}
	for _, r := range t {
		if (r < '0' || r > '9') && r != '.' {
			return 0, perr.New(sandbox.CodeBadRequest, fix, "invalid memory size %q", s)
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || t == "" {
		return 0, perr.New(sandbox.CodeBadRequest, fix, "invalid memory size %q", s)
	}
	v := n * mult
	if v > 1<<53 {
		return 0, perr.New(sandbox.CodeBadRequest, fix, "memory size %q is too large", s)
	}
	if v < MinMemoryBytes {
		return 0, perr.New(sandbox.CodeBadRequest, fix, "memory size %q is under the engine's minimum of 6m", s)
	}
	return int64(v), nil
}
