// Package sandbox defines the six tools agents use (exec, read, write, edit,
// glob, grep), the Provider interface that runs them (local, docker, e2b),
// and their dispatch over NATS subjects polos.<ns>.sandbox.<provider>.<op>.
//
// The JSON shapes of the requests and results below are a public contract:
// they are what agents' prompts expect and what travels on the subjects.
package sandbox

import (
	"context"
)

// Operation names; each is also the last token of its NATS subject.
const (
	OpCreate  = "create"
	OpDestroy = "destroy"
	OpExec    = "exec"
	OpRead    = "read"
	OpWrite   = "write"
	OpEdit    = "edit"
	OpGlob    = "glob"
	OpGrep    = "grep"
)

// Defaults and limits shared by every provider.
const (
	DefaultExecTimeoutSec = 300     // exec timeout when the request gives none
	MaxExecOutputChars    = 100_000 // past this, output keeps the first 20% and the last 80%
	DefaultReadLimitLines = 2000    // read returns at most this many lines unless limit is set
	MaxReadFileBytes      = 10 << 20
	MaxGlobResults        = 1000
	DefaultGrepMaxResults = 100
)

// Provider names.
const (
	ProviderLocal  = "local"
	ProviderDocker = "docker"
	ProviderE2B    = "e2b"
)

// ExecRequest runs a shell command inside the sandbox. The command string is
// passed to the sandbox's shell as one argument (sh -c CMD); no tool ever
// builds a shell string out of its arguments.
type ExecRequest struct {
	Command    string            `json:"command"`
	Cwd        string            `json:"cwd,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	TimeoutSec int               `json:"timeout,omitempty"` // seconds; 0 = DefaultExecTimeoutSec
	// Network gives this command the network (the local provider runs it
	// in the host's network namespace instead of an empty one). Only the
	// agent runtime sets it, from the policy's network capability; a value
	// the model sends is dropped. Docker and e2b ignore it: their network is
	// the container's (Spec.Network).
	Network bool `json:"network,omitempty"`
}

// ExecResult is what the agent sees. ExitCode is -1 when the command was
// killed (timeout) or rejected by a person.
type ExecResult struct {
	ExitCode   int    `json:"exit_code"`
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
	DurationMs int64  `json:"duration_ms"`
	Truncated  bool   `json:"truncated"`
	TimedOut   bool   `json:"timed_out,omitempty"`
}

// ReadRequest reads a text file by lines. Offset is the 1-based first line
// (0 = from the start); Limit the number of lines (0 = DefaultReadLimitLines).
type ReadRequest struct {
	Path   string `json:"path"`
	Offset int    `json:"offset,omitempty"`
	Limit  int    `json:"limit,omitempty"`
}

type ReadResult struct {
	Content    string `json:"content"`
	TotalLines int    `json:"total_lines"`
	Truncated  bool   `json:"truncated"` // more lines exist past Offset+Limit
}

// WriteRequest creates or replaces a file, creating parent directories.
type WriteRequest struct {
	Path    string `json:"path"`
	Content string `json:"content"`
}

type WriteResult struct {
	Path         string `json:"path"`
	BytesWritten int    `json:"bytes_written"`
}

// EditRequest replaces OldText by NewText. OldText must occur exactly once
// unless ReplaceAll is set; otherwise the error says how many times it occurs.
type EditRequest struct {
	Path       string `json:"path"`
	OldText    string `json:"old_text"`
	NewText    string `json:"new_text"`
	ReplaceAll bool   `json:"replace_all,omitempty"`
}

type EditResult struct {
	Path         string `json:"path"`
	Replacements int    `json:"replacements"`
}

// GlobRequest lists files matching Pattern (doublestar: ** crosses
// directories) under Cwd, minus Ignore patterns; at most MaxGlobResults.
type GlobRequest struct {
	Pattern string   `json:"pattern"`
	Cwd     string   `json:"cwd,omitempty"`
	Ignore  []string `json:"ignore,omitempty"`
}

type GlobResult struct {
	Files     []string `json:"files"`
	Truncated bool     `json:"truncated"`
}

// GrepRequest searches file contents with a Go regular expression (RE2).
type GrepRequest struct {
	Pattern      string `json:"pattern"`
	Cwd          string `json:"cwd,omitempty"`
	Include      string `json:"include,omitempty"` // glob on file paths, e.g. "**/*.go"
	MaxResults   int    `json:"max_results,omitempty"`
	ContextLines int    `json:"context_lines,omitempty"`
}

type GrepMatch struct {
	Path   string   `json:"path"`
	Line   int      `json:"line"` // 1-based
	Text   string   `json:"text"`
	Before []string `json:"before,omitempty"`
	After  []string `json:"after,omitempty"`
}

type GrepResult struct {
	Matches   []GrepMatch `json:"matches"`
	Truncated bool        `json:"truncated"`
}

// Spec describes the sandbox to create. Owner is the run or session that
// owns it (put in container labels so an orphan sweep can find it).
type Spec struct {
	Provider     string            `json:"provider"`
	Owner        string            `json:"owner"`
	Scope        string            `json:"scope,omitempty"` // "run" (default) or "session"
	Image        string            `json:"image,omitempty"`
	WorkspaceDir string            `json:"workspace_dir,omitempty"` // host dir (local, docker bind)
	Network      string            `json:"network,omitempty"`       // docker: "none" (default) or "bridge"
	Memory       string            `json:"memory,omitempty"`        // docker: e.g. "2g"
	CPUs         float64           `json:"cpus,omitempty"`
	PidsLimit    int64             `json:"pids_limit,omitempty"`
	Env          map[string]string `json:"env,omitempty"`
	Template     string            `json:"template,omitempty"` // e2b
	TimeoutSec   int               `json:"timeout_sec,omitempty"`
}

// Info identifies a created sandbox; it is recorded in the run's history so
// a run resumed on another executor reaches the same sandbox.
//
// Owner, SharedBy and Seal are set by the sandbox host that created the
// sandbox (package dispatch; ADR 0112): Seal is an HMAC, under the host's
// key, over the other fields and the namespace, so a host serves only
// sandboxes it created, unchanged, and only for the run named in Owner.
// In-process providers leave them empty. Treat an Info as opaque: change
// any field and every host refuses it (CodeForged).
type Info struct {
	Provider  string `json:"provider"`
	ID        string `json:"id"`
	Image     string `json:"image,omitempty"`
	Workspace string `json:"workspace,omitempty"` // path of the workspace inside the sandbox
	// Confinement says how exec is confined: "" for the provider's own
	// isolation (a container, a VM), a description such as
	// "namespaces+landlock" for the local provider, or ConfinementNone
	// when commands run unconfined as the daemon's user.
	Confinement string `json:"confinement,omitempty"`
	Owner       string `json:"owner,omitempty"`     // the run this Info lets use the sandbox
	SharedBy    string `json:"shared_by,omitempty"` // the run that shared it with Owner (Share); "" for the creator
	Seal        string `json:"seal,omitempty"`
}

// ConfinementNone in Info.Confinement: exec runs unconfined on the host
// (the local provider's explicit unsafe mode). polos status shows it.
const ConfinementNone = "none"

// Sandbox is one live sandbox. Paths in requests are relative to the
// workspace (or absolute inside the sandbox for docker/e2b); the provider
// confines them. Methods return *perr.Error for bad input (CodeBadRequest,
// CodeNotFound, CodeOutsideWorkspace, CodeBinaryFile, ...).
type Sandbox interface {
	Info() Info
	Exec(ctx context.Context, req ExecRequest) (ExecResult, error)
	Read(ctx context.Context, req ReadRequest) (ReadResult, error)
	Write(ctx context.Context, req WriteRequest) (WriteResult, error)
	Edit(ctx context.Context, req EditRequest) (EditResult, error)
	Glob(ctx context.Context, req GlobRequest) (GlobResult, error)
	Grep(ctx context.Context, req GrepRequest) (GrepResult, error)
}

// Provider creates, finds and destroys sandboxes of one kind.
type Provider interface {
	Name() string
	Create(ctx context.Context, spec Spec) (Sandbox, error)
	// Open reattaches to an existing sandbox; it returns an error with code
	// CodeSandboxLost when the sandbox no longer exists.
	Open(ctx context.Context, info Info, spec Spec) (Sandbox, error)
	Destroy(ctx context.Context, info Info) error
}

// FS is the file primitives a provider offers. The five file tools (read,
// write, edit, glob, grep) are written once, over FS, in this package; a
// provider implements only these primitives and Exec. Paths are as the agent
// gave them (relative to the workspace, or absolute inside the sandbox); the
// provider resolves and confines them and returns CodeOutsideWorkspace or
// CodeNotFound as *perr.Error.
type FS interface {
	// ReadFile returns at most maxBytes+1 bytes so callers can tell "too large".
	ReadFile(ctx context.Context, path string, maxBytes int64) ([]byte, error)
	// WriteFile creates or truncates path, creating parent directories.
	WriteFile(ctx context.Context, path string, data []byte) error
	// Walk calls fn for every entry under root (root itself excluded), with
	// rel the slash-separated path relative to root. Symlinks are reported,
	// never followed. fn may return fs.SkipDir or fs.SkipAll.
	Walk(ctx context.Context, root string, fn func(rel string, isDir bool) error) error
}

// Execer runs a command and returns its raw output; the shared tool code
// strips ANSI codes and truncates. It must kill the whole process tree on
// timeout or context cancellation and report ExitCode -1 and TimedOut.
type Execer interface {
	Exec(ctx context.Context, req ExecRequest) (ExecResult, error)
}

// Backend is what a provider implements for one live sandbox; New turns it
// into the Sandbox with the six tools.
type Backend interface {
	Info() Info
	FS
	Execer
}
