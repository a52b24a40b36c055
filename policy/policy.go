// Package policy decides, for every command and file operation an agent
// attempts, whether it runs (allow), waits for a person (ask) or is refused
// (deny).
//
// A command is parsed as shell (bash and POSIX sh) and allowed only if every
// simple command in it is allowed: lists, pipelines, subshells, the bodies of
// compound commands and functions, and the commands inside substitutions.
// Constructs that hide what will run (eval, sh -c, interpreters given code,
// substitutions, loader variables such as PATH or LD_PRELOAD, writes outside
// the workspace) are at least ask. Paths are resolved against the workspace
// without following symlinks out of it.
//
// The core is pure: a Policy is immutable, safe for concurrent use, and the
// same policy, input and Context give the same Result. The only I/O is the
// inspection of symlinks under the workspace (see Context.Links). The rules
// and how the two configuration forms combine are in docs/policy.md.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/polos-run/polos/perr"
)

// semanticsVersion is part of the digest (2: issue 14, ADR 0102): a change to how rules are read
// must change the digest of every policy, so that a recorded digest always
// names one behaviour.
const semanticsVersion = "polos-policy/2"

// Policy is a validated, compiled policy. Build it with New, Parse or Load.
type Policy struct {
	cfg    Config
	allow  []pattern // commands.allow then exec.allowlist
	ask    []pattern
	deny   []pattern
	paths  pathRules
	eff    map[Env]effective
	digest string
	// heads are the programs (loose first words) of the ask and deny rules;
	// anyHead is set when one of them starts with `*`.
	heads   map[string]bool
	anyHead bool
}

// New validates cfg and compiles it. Errors are *perr.Error with
// CodeInvalid naming the offending field (e.g. commands.allow[2]).
func New(cfg Config) (*Policy, error) {
	norm, ferr := normalize(cfg)
	if ferr != nil {
		return nil, perr.New(CodeInvalid, ferr.fix, "policy: %s: %s", ferr.where(), ferr.msg)
	}
	return compile(norm), nil
}

func compile(c Config) *Policy {
	p := &Policy{cfg: c, eff: make(map[Env]effective, 3)}
	for i, s := range c.Commands.Allow {
		p.allow = append(p.allow, compilePattern(s, fmt.Sprintf("commands.allow[%d] %q", i, s)))
	}
	if c.Exec != nil {
		for i, s := range c.Exec.Allowlist {
			p.allow = append(p.allow, compilePattern(s, fmt.Sprintf("exec.allowlist[%d] %q", i, s)))
		}
	}
	for i, s := range c.Commands.Ask {
		p.ask = append(p.ask, compilePattern(s, fmt.Sprintf("commands.ask[%d] %q", i, s)))
	}
	for i, s := range c.Commands.Deny {
		p.deny = append(p.deny, compilePattern(s, fmt.Sprintf("commands.deny[%d] %q", i, s)))
	}
	p.heads = make(map[string]bool)
	for _, r := range append(append([]pattern(nil), p.ask...), p.deny...) {
		head, _, _ := strings.Cut(loosen(r.source), " ")
		if strings.Contains(head, "*") {
			p.anyHead = true
		}
		p.heads[head] = true
	}
	p.paths = compilePathRules(c.Paths)
	for _, env := range []Env{EnvLocal, EnvDocker, EnvE2B} {
		p.eff[env] = resolve(&c, env)
	}
	canonical, _ := json.Marshal(struct {
		Semantics string `json:"semantics"`
		Config    Config `json:"config"`
	}{semanticsVersion, c})
	sum := sha256.Sum256(canonical)
	p.digest = "sha256:" + hex.EncodeToString(sum[:])
	return p
}

// Config returns the normalized configuration the policy was built from.
func (p *Policy) Config() Config { return p.cfg }

// Digest is the sha256 of the canonical policy (normalized configuration and
// the version of the matching rules), "sha256:<hex>". Two policies with the
// same digest decide every input the same way; record it with each decision
// so a replay can tell whether the policy changed since.
func (p *Policy) Digest() string { return p.digest }

func (p *Policy) effective(env Env) effective { return p.eff[env.normalize()] }

func (p *Policy) result(d Decision, reasons []Reason) Result {
	return Result{Decision: d, Reasons: reasons, PolicyDigest: p.digest}
}
