package policy

import "sort"

// Decision is what happens to an action: it runs, it waits for a person, or
// it is refused.
type Decision string

// The three decisions, from the most to the least permissive.
const (
	DecisionAllow Decision = "allow" // runs without interruption
	DecisionAsk   Decision = "ask"   // waits until a person approves or rejects it
	DecisionDeny  Decision = "deny"  // is refused outright
)

// Valid reports whether d is one of the three decisions.
func (d Decision) Valid() bool {
	return d == DecisionAllow || d == DecisionAsk || d == DecisionDeny
}

// rank orders decisions by strictness; an unknown decision ranks as ask so
// that a corrupted value never loosens anything.
func (d Decision) rank() int {
	switch d {
	case DecisionAllow:
		return 0
	case DecisionDeny:
		return 2
	default:
		return 1
	}
}

// Stricter returns the stricter of d and o (deny > ask > allow).
func (d Decision) Stricter(o Decision) Decision {
	if o.rank() > d.rank() {
		return o
	}
	return d
}

// Env is the kind of sandbox a decision is made for. It selects the
// defaults of the Polos form (see Config).
type Env string

// The sandbox kinds. An empty or unknown Env is treated as EnvLocal, the
// kind with the strictest defaults.
const (
	EnvLocal  Env = "local"
	EnvDocker Env = "docker"
	EnvE2B    Env = "e2b"
)

// normalize maps an empty or unknown Env to EnvLocal.
func (e Env) normalize() Env {
	switch e {
	case EnvDocker, EnvE2B:
		return e
	default:
		return EnvLocal
	}
}

// isolated reports whether the sandbox is a container or a remote machine
// (its own file system), as opposed to the host.
func (e Env) isolated() bool { return e.normalize() != EnvLocal }

// Op is a file operation checked by CheckPath.
type Op string

// The file operations; they are the names of the sandbox tools.
const (
	OpRead  Op = "read"
	OpWrite Op = "write"
	OpEdit  Op = "edit"
	OpGlob  Op = "glob"
	OpGrep  Op = "grep"
)

// writes reports whether op changes a file.
func (op Op) writes() bool { return op == OpWrite || op == OpEdit }

// Context is what a check needs to know about the sandbox it is made for.
type Context struct {
	// Env selects the per-environment defaults; empty means EnvLocal.
	Env Env `json:"env,omitempty"`
	// Workspace is the directory relative paths (in file operations and in
	// redirections) are resolved against. Unless path_restriction says
	// otherwise it is also the directory file operations are confined to
	// (always for local; for docker and e2b only when path_restriction is set,
	// because there the container is the boundary).
	Workspace string `json:"workspace,omitempty"`
	// Grants are "allow always" answers a person gave earlier. Each acts as an
	// extra allow rule (an exact command unless it contains *). A grant lifts
	// ask decisions (rules, capabilities, shell hazards it names explicitly) but
	// never a deny.
	Grants []string `json:"grants,omitempty"`
	// Network is the docker network mode ("none", "bridge", ...). With docker
	// and "none" (or empty: docker's default here is none) nothing can reach
	// out, so the network capability does not apply to commands.
	Network string `json:"network,omitempty"`
	// Links inspects symlinks under the workspace. Nil means the host file
	// system for EnvLocal, and no inspection (lexical checks only) for docker
	// and e2b, whose files are not on this machine; a docker caller with a
	// bind-mounted workspace may pass one that maps sandbox paths to the host.
	Links LinkReader `json:"-"`
}

// Result is a decision with its explanation.
type Result struct {
	Decision Decision `json:"decision"`
	// Reasons explain the decision, strictest first: Reasons[0] is the reason
	// that decided. Allowed segments are listed too, with the rule that
	// allowed them.
	Reasons []Reason `json:"reasons"`
	// PolicyDigest identifies the policy that decided (see Policy.Digest).
	PolicyDigest string `json:"policy_digest"`
}

// Reason explains one part of a decision.
type Reason struct {
	// Segment is the part of the command (one simple command, a substitution,
	// a redirection) or the path the reason is about.
	Segment string `json:"segment"`
	// Rule names the rule that applied, e.g. `commands.deny[0] "sudo *"`,
	// `default: ask`, `hazard: eval`.
	Rule string `json:"rule"`
	// Why says in words why the rule gave this decision.
	Why string `json:"why"`
	// Decision is what this reason alone decides.
	Decision Decision `json:"decision"`
}

// finish orders reasons strictest first (stable, so source order is kept
// within a decision), drops duplicates and computes the decision.
func (p *Policy) finish(reasons []Reason) Result {
	seen := make(map[Reason]bool, len(reasons))
	out := make([]Reason, 0, len(reasons))
	d := DecisionAllow
	for _, r := range reasons {
		if seen[r] {
			continue
		}
		seen[r] = true
		out = append(out, r)
		d = d.Stricter(r.Decision)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Decision.rank() > out[j].Decision.rank() })
	return p.result(d, out)
}
