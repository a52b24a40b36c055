package policy

import (
	"fmt"
	"sort"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/polos-run/polos/perr"
)

// Stable error codes of the policy package.
const (
	// CodeInvalid: the policy is malformed (unknown key, unknown decision, bad
	// pattern, YAML syntax). The message names file:line:col when known.
	CodeInvalid perr.Code = "POLICY_INVALID"
	// CodeUnreadable: the policy file could not be read.
	CodeUnreadable perr.Code = "POLICY_UNREADABLE"
)

// Values of exec.security (the Polos form).
const (
	SecurityAllowlist      = "allowlist"       // allowlisted commands run, everything else asks
	SecurityAllowAlways    = "allow-always"    // every command runs (default for docker and e2b)
	SecurityApprovalAlways = "approval-always" // every command asks (default for local)
)

// Values of file_approval (the Polos form).
const (
	FileApprovalAlways = "always" // every write and edit asks (default for local)
	FileApprovalNone   = "none"   // writes and edits inside the workspace run (default for docker, e2b)
)

// Capability names of the portable form.
const (
	CapabilityFileWrite = "fileWrite" // the write and edit tools
	CapabilityNetwork   = "network"   // commands that reach out; docker's network mode
)

// DefaultDecision is the command default of the portable form when
// `default` is omitted.
const DefaultDecision = DecisionAsk

// CommandRules are the portable form's command patterns. A pattern is a
// command where `*` matches any text (spaces included); without `*` it
// matches exactly that command.
type CommandRules struct {
	Allow []string `yaml:"allow,omitempty" json:"allow,omitempty"`
	Ask   []string `yaml:"ask,omitempty" json:"ask,omitempty"`
	Deny  []string `yaml:"deny,omitempty" json:"deny,omitempty"`
}

// ExecConfig is the Polos form's exec security.
type ExecConfig struct {
	Security  string   `yaml:"security,omitempty" json:"security,omitempty"`
	Allowlist []string `yaml:"allowlist,omitempty" json:"allowlist,omitempty"`
}

// PathRules are glob patterns (doublestar: ** crosses directories) on file
// paths. A relative pattern is relative to the workspace. allow lifts the
// "outside the workspace" restriction for the paths it matches; ask and deny
// make matching paths stricter wherever they are.
type PathRules struct {
	Allow []string `yaml:"allow,omitempty" json:"allow,omitempty"`
	Ask   []string `yaml:"ask,omitempty" json:"ask,omitempty"`
	Deny  []string `yaml:"deny,omitempty" json:"deny,omitempty"`
}

// Config is a policy as written: the portable form (commands, capabilities,
// default), the Polos form (exec, file_approval, path_restriction) and path
// rules. Every field is optional; docs/policy.md says how the forms combine.
type Config struct {
	Commands        CommandRules        `yaml:"commands,omitempty" json:"commands,omitempty"`
	Capabilities    map[string]Decision `yaml:"capabilities,omitempty" json:"capabilities,omitempty"`
	Default         Decision            `yaml:"default,omitempty" json:"default,omitempty"`
	Paths           PathRules           `yaml:"paths,omitempty" json:"paths,omitempty"`
	Exec            *ExecConfig         `yaml:"exec,omitempty" json:"exec,omitempty"`
	FileApproval    string              `yaml:"file_approval,omitempty" json:"file_approval,omitempty"`
	PathRestriction string              `yaml:"path_restriction,omitempty" json:"path_restriction,omitempty"`
}

// fieldError is a validation error at a path in the config ("commands",
// "allow", 2), so that Parse can point at the line and column.
type fieldError struct {
	path []any
	msg  string
	fix  string
}

func (e *fieldError) where() string {
	var b strings.Builder
	for _, p := range e.path {
		switch p := p.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", p)
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			fmt.Fprint(&b, p)
		}
	}
	return b.String()
}

// normalize validates cfg and returns it with patterns normalized.
func normalize(cfg Config) (Config, *fieldError) {
	out := cfg
	var err *fieldError
	patterns := func(list []string, path ...any) []string {
		if err != nil || len(list) == 0 {
			return nil
		}
		res := make([]string, len(list))
		for i, raw := range list {
			p := canonicalPattern(raw)
			switch {
			case p == "":
				err = &fieldError{append(path, i), "the pattern is empty; expected a command such as \"ls *\"", "remove the entry or write a command"}
			case strings.ContainsAny(raw, "\x00\n\r"):
				err = &fieldError{append(path, i), "the pattern holds a newline or NUL; a pattern is one line", "split it into one pattern per command"}
			}
			res[i] = p
		}
		return res
	}
	out.Commands.Allow = patterns(cfg.Commands.Allow, "commands", "allow")
	out.Commands.Ask = patterns(cfg.Commands.Ask, "commands", "ask")
	out.Commands.Deny = patterns(cfg.Commands.Deny, "commands", "deny")
	if cfg.Exec != nil {
		ex := *cfg.Exec
		ex.Allowlist = patterns(cfg.Exec.Allowlist, "exec", "allowlist")
		switch ex.Security {
		case "", SecurityAllowlist, SecurityAllowAlways, SecurityApprovalAlways:
		default:
			if err == nil {
				err = &fieldError{[]any{"exec", "security"}, fmt.Sprintf("unknown exec security %q; expected %s, %s or %s", ex.Security, SecurityAllowlist, SecurityAllowAlways, SecurityApprovalAlways), "use one of the three values"}
			}
		}
		if err == nil && len(ex.Allowlist) > 0 && ex.Security != "" && ex.Security != SecurityAllowlist {
			err = &fieldError{[]any{"exec", "allowlist"}, fmt.Sprintf("exec.allowlist is set but exec.security is %q, which ignores it", ex.Security), "set exec.security: allowlist, or move the patterns to commands.allow"}
		}
		if len(ex.Allowlist) > 0 && ex.Security == "" {
			ex.Security = SecurityAllowlist
		}
		if ex.Security == "" && len(ex.Allowlist) == 0 {
			out.Exec = nil
		} else {
			out.Exec = &ex
		}
	}
	if err == nil && cfg.Default != "" && !cfg.Default.Valid() {
		err = &fieldError{[]any{"default"}, fmt.Sprintf("unknown decision %q; expected allow, ask or deny", cfg.Default), "use allow, ask or deny"}
	}
	if len(cfg.Capabilities) > 0 {
		out.Capabilities = make(map[string]Decision, len(cfg.Capabilities))
		names := make([]string, 0, len(cfg.Capabilities))
		for name := range cfg.Capabilities {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			d := cfg.Capabilities[name]
			if err == nil && name != CapabilityFileWrite && name != CapabilityNetwork {
				err = &fieldError{[]any{"capabilities", name}, fmt.Sprintf("unknown capability %q; expected %s or %s", name, CapabilityFileWrite, CapabilityNetwork), "remove it or fix the spelling"}
			}
			if err == nil && !d.Valid() {
				err = &fieldError{[]any{"capabilities", name}, fmt.Sprintf("unknown decision %q; expected allow, ask or deny", d), "use allow, ask or deny"}
			}
			out.Capabilities[name] = d
		}
	} else {
		out.Capabilities = nil
	}
	switch cfg.FileApproval {
	case "", FileApprovalAlways, FileApprovalNone:
	default:
		if err == nil {
			err = &fieldError{[]any{"file_approval"}, fmt.Sprintf("unknown file_approval %q; expected %s or %s", cfg.FileApproval, FileApprovalAlways, FileApprovalNone), "use always or none"}
		}
	}
	if err == nil && strings.ContainsRune(cfg.PathRestriction, 0) {
		err = &fieldError{[]any{"path_restriction"}, "path_restriction holds a NUL byte", "write a directory path"}
	}
	globs := func(list []string, path ...any) []string {
		if len(list) == 0 {
			return nil
		}
		res := make([]string, len(list))
		for i, g := range list {
			g = strings.TrimSpace(g)
			if err == nil && (g == "" || !doublestar.ValidatePattern(g)) {
				err = &fieldError{append(path, i), fmt.Sprintf("%q is not a valid path pattern", g), "write a glob such as \"/tmp/**\" or \"**/.env\""}
			}
			res[i] = g
		}
		return res
	}
	out.Paths.Allow = globs(cfg.Paths.Allow, "paths", "allow")
	out.Paths.Ask = globs(cfg.Paths.Ask, "paths", "ask")
	out.Paths.Deny = globs(cfg.Paths.Deny, "paths", "deny")
	return out, err
}

// portable reports whether the config uses the portable form, in which an
// omitted default means ask.
func (c *Config) portable() bool {
	return len(c.Commands.Allow)+len(c.Commands.Ask)+len(c.Commands.Deny) > 0 || len(c.Capabilities) > 0 || c.Default != ""
}

// settled is one effective setting and where it comes from.
type settled struct {
	decision Decision
	rule     string // e.g. "default: ask", "exec.security: approval-always (default for local)"
}

// effective is the policy as it applies in one environment.
type effective struct {
	commandDefault settled
	write          settled
	network        *settled // nil: no network capability rule
	// open: every command is allowed (default allow, no ask or deny rule, no
	// stricter network capability). Shell hazards cannot hide anything then,
	// so they do not raise the decision.
	open bool
}

func securityDecision(s string) Decision {
	switch s {
	case SecurityAllowAlways:
		return DecisionAllow
	default: // allowlist and approval-always both ask for what is not allowed
		return DecisionAsk
	}
}

func fileApprovalDecision(s string) Decision {
	if s == FileApprovalNone {
		return DecisionAllow
	}
	return DecisionAsk
}

// resolve computes the effective settings of a normalized config in env.
func resolve(c *Config, env Env) effective {
	var e effective
	env = env.normalize()

	// The command default.
	var sec string
	if c.Exec != nil {
		sec = c.Exec.Security
	}
	secRule := settled{securityDecision(sec), "exec.security: " + sec}
	defRule := settled{c.Default, "default: " + string(c.Default)}
	switch {
	case c.Default != "" && sec != "":
		e.commandDefault = defRule
		if secRule.decision.rank() > defRule.decision.rank() {
			e.commandDefault = secRule
		}
	case c.Default != "":
		e.commandDefault = defRule
	case sec != "":
		e.commandDefault = secRule
	case c.portable():
		e.commandDefault = settled{DefaultDecision, "default: ask (omitted)"}
	case env.isolated():
		e.commandDefault = settled{DecisionAllow, "exec.security: allow-always (default for " + string(env) + ")"}
	default:
		e.commandDefault = settled{DecisionAsk, "exec.security: approval-always (default for local)"}
	}

	// Writes and edits.
	fw, hasFW := c.Capabilities[CapabilityFileWrite]
	faRule := settled{fileApprovalDecision(c.FileApproval), "file_approval: " + c.FileApproval}
	fwRule := settled{fw, "capabilities.fileWrite: " + string(fw)}
	switch {
	case hasFW && c.FileApproval != "":
		e.write = faRule
		if fwRule.decision.rank() > faRule.decision.rank() {
			e.write = fwRule
		}
	case hasFW:
		e.write = fwRule
	case c.FileApproval != "":
		e.write = faRule
	case env.isolated():
		e.write = settled{DecisionAllow, "file_approval: none (default for " + string(env) + ")"}
	default:
		e.write = settled{DecisionAsk, "file_approval: always (default for local)"}
	}

	if nw, ok := c.Capabilities[CapabilityNetwork]; ok {
		e.network = &settled{nw, "capabilities.network: " + string(nw)}
	}
	e.open = e.commandDefault.decision == DecisionAllow &&
		len(c.Commands.Ask) == 0 && len(c.Commands.Deny) == 0 &&
		(e.network == nil || e.network.decision == DecisionAllow)
	return e
}
