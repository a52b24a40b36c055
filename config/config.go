// Package config reads polos.yaml: the namespace, the daemon's server
// settings and the agents it serves.
//
// Every error a broken file produces is a *perr.Error with CodeInvalid whose
// message starts with file:line:col and says what is wrong (an unknown field,
// a wrong type, a missing or duplicate agent id, an unknown provider), so
// polosd can refuse to start before anything runs.
package config

import (
	"github.com/polos-run/polos/ratelimit"

	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox/local"
)

// Error codes.
const (
	CodeInvalid    perr.Code = "CONFIG_INVALID"    // the file parses but says something wrong
	CodeUnreadable perr.Code = "CONFIG_UNREADABLE" // the file cannot be read
)

// Defaults of the server section (also polosd's flag defaults).
const (
	DefaultNamespace = "default"
	DefaultDataDir   = "~/.polos"
	DefaultListen    = "127.0.0.1:4222"
	DefaultHTTP      = "127.0.0.1:8080"
	DefaultExecutors = 4
	DefaultFileName  = "polos.yaml"
)

// Values accepted for agents[].provider and agents[].sandbox.env.
var (
	Providers    = []string{"anthropic", "openai", "scripted"}
	SandboxEnvs  = []string{"docker", "local", "e2b"}
	idPattern    = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	fixConfigDoc = "correct the file; docs/config.md lists every field"
)

// Config is a parsed polos.yaml.
type Config struct {
	// Path is the absolute path of the file ("" for the zero config); Dir
	// its directory, against which relative paths were resolved.
	Path string `yaml:"-"`
	Dir  string `yaml:"-"`

	Namespace string  `yaml:"namespace"`
	Server    Server  `yaml:"server"`
	Agents    []Agent `yaml:"agents"`
	// RateLimits are requests/min and tokens/min per provider and model,
	// shared by every executor (see ratelimit.RateRule).
	RateLimits ratelimit.RateRules `yaml:"rate_limits"`
}

// Server is the daemon's settings; polosd flags and POLOS_* variables
// override them.
type Server struct {
	NATSURL   string `yaml:"nats_url"`
	DataDir   string `yaml:"data_dir"`
	Listen    string `yaml:"listen"`
	HTTP      string `yaml:"http"`
	Executors int    `yaml:"executors"`
	// Replicas is how many copies of every stream, KV bucket and object
	// store the server role provisions and keeps (1 on one machine, 3 on a
	// cluster). polosd --replicas (POLOS_REPLICAS) overrides it.
	Replicas int `yaml:"replicas"`
	// SandboxLocalConfinement is how the local sandbox confines exec on this
	// machine: "required" (default: confined, and polosd refuses to start
	// where the kernel cannot) or "none" (unsafe: commands run unconfined as
	// the daemon's user). polosd --sandbox-local-confinement overrides it.
	SandboxLocalConfinement string `yaml:"sandbox_local_confinement"`
}

// Agent is one agent definition. The agent runtime (package agent) turns it
// into a workflow registered under ID.
type Agent struct {
	ID                  string            `yaml:"id"`
	Provider            string            `yaml:"provider"`
	Model               string            `yaml:"model"`
	BaseURL             string            `yaml:"base_url"`
	Script              string            `yaml:"script"` // scripted provider only; made absolute
	SystemPrompt        string            `yaml:"system_prompt"`
	Sandbox             *Sandbox          `yaml:"sandbox"`
	Policy              yaml.Node         `yaml:"policy"` // raw: decode into policy.Config (see PolicyNode)
	Tools               []string          `yaml:"tools"`
	StopConditions      []StopCondition   `yaml:"stop_conditions"`
	ConversationHistory int               `yaml:"conversation_history"`
	Queue               *Queue            `yaml:"queue"`
	Env                 map[string]string `yaml:"env"`
	OutputSchema        yaml.Node         `yaml:"output_schema"` // a JSON Schema, written as YAML

	// Line is where the agent is defined (for later error messages).
	Line int `yaml:"-"`
}

// HasPolicy reports whether the agent has a policy section.
func (a *Agent) HasPolicy() bool { return a.Policy.Kind != 0 }

// Sandbox says where an agent's tools run.
type Sandbox struct {
	Env          string        `yaml:"env"`
	Docker       *DockerConfig `yaml:"docker"`
	Local        *LocalConfig  `yaml:"local"`
	E2B          *E2BConfig    `yaml:"e2b"`
	Exec         *ExecConfig   `yaml:"exec"`
	FileApproval string        `yaml:"file_approval"`
	Scope        string        `yaml:"scope"` // run (default) or session
}

// DockerConfig is sandbox.docker. WorkspaceDir is made absolute.
type DockerConfig struct {
	Image        string  `yaml:"image"`
	WorkspaceDir string  `yaml:"workspace_dir"`
	Network      string  `yaml:"network"`
	Memory       string  `yaml:"memory"`
	CPUs         float64 `yaml:"cpus"`
	PidsLimit    int64   `yaml:"pids_limit"`
}

// LocalConfig is sandbox.local. Both paths are made absolute.
type LocalConfig struct {
	Cwd             string `yaml:"cwd"`
	PathRestriction string `yaml:"path_restriction"`
}

// E2BConfig is sandbox.e2b.
type E2BConfig struct {
	Template   string `yaml:"template"`
	TimeoutSec int    `yaml:"timeout_sec"`
	APIURL     string `yaml:"api_url"`
}

// ExecConfig is sandbox.exec: the same keys as policy.ExecConfig.
type ExecConfig struct {
	Security  string   `yaml:"security"`
	Allowlist []string `yaml:"allowlist"`
}

// StopCondition is one entry of stop_conditions (the first that is met ends
// the agent loop).
type StopCondition struct {
	MaxSteps  int    `yaml:"max_steps"`
	MaxTokens int    `yaml:"max_tokens"`
	Executed  string `yaml:"executed"` // stop once this tool ran
}

// Queue names the task queue an agent's runs go to, with its concurrency.
type Queue struct {
	Name             string `yaml:"name"`
	ConcurrencyLimit int    `yaml:"concurrency_limit"`
}

// Default returns the configuration used when there is no file.
func Default() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

func (c *Config) applyDefaults() {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.Server.DataDir == "" {
		c.Server.DataDir = DefaultDataDir
	}
	if c.Server.Listen == "" {
		c.Server.Listen = DefaultListen
	}
	if c.Server.HTTP == "" {
		c.Server.HTTP = DefaultHTTP
	}
	if c.Server.Executors == 0 {
		c.Server.Executors = DefaultExecutors
	}
}

// Agent returns the agent with id, or nil.
func (c *Config) Agent(id string) *Agent {
	for i := range c.Agents {
		if c.Agents[i].ID == id {
			return &c.Agents[i]
		}
	}
	return nil
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, perr.Wrap(err, CodeUnreadable, "check the path given with --config", "config file %s cannot be read", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	return Parse(data, abs)
}

// Parse validates a polos.yaml document; filename is used in messages and
// relative paths resolve against its directory.
func Parse(data []byte, filename string) (*Config, error) {
	c := &Config{Path: filename}
	if filename != "" {
		c.Dir = filepath.Dir(filename)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, syntaxError(filename, err)
	}
	if len(doc.Content) > 0 && !(doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null") {
		root := doc.Content[0]
		if err := checkNode(filename, root, reflect.TypeOf(Config{}), ""); err != nil {
			return nil, err
		}
		if err := root.Decode(c); err != nil {
			return nil, syntaxError(filename, err)
		}
		if err := c.validate(filename, root); err != nil {
			return nil, err
		}
	}
	c.applyDefaults()
	c.resolvePaths()
	return c, nil
}

func (c *Config) validate(file string, root *yaml.Node) error {
	agentsNode := child(root, "agents")
	seen := map[string]int{}
	for i := range c.Agents {
		a := &c.Agents[i]
		var an *yaml.Node
		if agentsNode != nil && i < len(agentsNode.Content) {
			an = agentsNode.Content[i]
			a.Line = an.Line
		}
		at := func(key string) *yaml.Node {
			if n := child(an, key); n != nil {
				return n
			}
			return an
		}
		if a.ID == "" {
			return invalid(file, an, "give every agent an id (letters, digits, _ and -)", "agents[%d]: missing required field id", i)
		}
		if !idPattern.MatchString(a.ID) {
			return invalid(file, at("id"), "use letters, digits, _ and - only", "agents[%d]: id %q is not a valid name", i, a.ID)
		}
		if line, dup := seen[a.ID]; dup {
			return invalid(file, at("id"), "give each agent its own id", "agents[%d]: duplicate agent id %q (first defined on line %d)", i, a.ID, line)
		}
		seen[a.ID] = a.Line
		if a.Provider == "" {
			return invalid(file, an, "set provider to one of "+strings.Join(Providers, ", "), "agent %q: missing required field provider", a.ID)
		}
		if !contains(Providers, a.Provider) {
			return invalid(file, at("provider"), "use one of "+strings.Join(Providers, ", "), "agent %q: unknown provider %q", a.ID, a.Provider)
		}
		if a.Provider == "scripted" && a.Script == "" {
			return invalid(file, at("provider"), "set script: to a script file (relative to this file)", "agent %q: provider scripted needs a script", a.ID)
		}
		if a.Sandbox != nil {
			sn := child(an, "sandbox")
			if a.Sandbox.Env == "" {
				return invalid(file, sn, "set sandbox.env to one of "+strings.Join(SandboxEnvs, ", "), "agent %q: missing required field sandbox.env", a.ID)
			}
			if !contains(SandboxEnvs, a.Sandbox.Env) {
				return invalid(file, child(sn, "env"), "use one of "+strings.Join(SandboxEnvs, ", "), "agent %q: unknown sandbox env %q", a.ID, a.Sandbox.Env)
			}
		}
		if a.Queue != nil && a.Queue.Name != "" && !idPattern.MatchString(a.Queue.Name) {
			return invalid(file, child(child(an, "queue"), "name"), "use letters, digits, _ and - only", "agent %q: queue name %q is not a valid name", a.ID, a.Queue.Name)
		}
	}
	if c.Namespace != "" && !idPattern.MatchString(c.Namespace) {
		return invalid(file, child(root, "namespace"), "use letters, digits, _ and - only", "namespace %q is not a valid name", c.Namespace)
	}
	if c.Server.Replicas < 0 || c.Server.Replicas > 5 {
		return invalid(file, child(child(root, "server"), "replicas"), "use 1 (one machine) or 3 or 5 (a cluster)", "server.replicas is %d", c.Server.Replicas)
	}
	if c.Server.Executors < 0 {
		return invalid(file, child(child(root, "server"), "executors"), "use a positive number", "server.executors is %d", c.Server.Executors)
	}
	if v := c.Server.SandboxLocalConfinement; v != "" && v != local.ConfinementRequired && v != local.ConfinementNone {
		return invalid(file, child(child(root, "server"), "sandbox_local_confinement"), "use "+local.ConfinementRequired+" or "+local.ConfinementNone,
			"server.sandbox_local_confinement is %q", v)
	}
	return nil
}

// resolvePaths makes relative paths absolute against the file's directory.
func (c *Config) resolvePaths() {
	abs := func(p *string) {
		if *p == "" || c.Dir == "" || filepath.IsAbs(*p) || strings.HasPrefix(*p, "~") {
			return
		}
		*p = filepath.Join(c.Dir, *p)
	}
	if c.Server.DataDir != DefaultDataDir {
		abs(&c.Server.DataDir)
	}
	for i := range c.Agents {
		a := &c.Agents[i]
		abs(&a.Script)
		if s := a.Sandbox; s != nil {
			if s.Docker != nil {
				abs(&s.Docker.WorkspaceDir)
			}
			if s.Local != nil {
				abs(&s.Local.Cwd)
				abs(&s.Local.PathRestriction)
			}
		}
	}
}

// ExpandHome replaces a leading ~ with the user's home directory.
func ExpandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, p[1:])
		}
	}
	return p
}

// checkNode walks n against Go type t: every mapping key must be a field's
// yaml tag and every scalar must have the field's type. where is the dotted
// path for messages.
func checkNode(file string, n *yaml.Node, t reflect.Type, where string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if t == reflect.TypeOf(yaml.Node{}) {
		return nil
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	name := where
	if name == "" {
		name = "the document"
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return invalid(file, n, fixConfigDoc, "%s: expected a mapping, got %s", name, describe(n))
		}
		fields := map[string]reflect.StructField{}
		var names []string
		var collect func(t reflect.Type)
		collect = func(t reflect.Type) {
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				parts := strings.Split(f.Tag.Get("yaml"), ",")
				if len(parts) > 1 && parts[1] == "inline" && f.Type.Kind() == reflect.Struct {
					collect(f.Type)
					continue
				}
				if parts[0] == "" || parts[0] == "-" {
					continue
				}
				fields[parts[0]] = f
				names = append(names, parts[0])
			}
		}
		collect(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				return invalid(file, k, "remove it or use one of: "+strings.Join(names, ", "), "%s: unknown field %q", name, k.Value)
			}
			if err := checkNode(file, v, f.Type, join(where, k.Value)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return invalid(file, n, fixConfigDoc, "%s: expected a list, got %s", name, describe(n))
		}
		for i, e := range n.Content {
			if err := checkNode(file, e, t.Elem(), fmt.Sprintf("%s[%d]", where, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return invalid(file, n, fixConfigDoc, "%s: expected a mapping, got %s", name, describe(n))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkNode(file, n.Content[i+1], t.Elem(), join(where, n.Content[i].Value)); err != nil {
				return err
			}
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return invalid(file, n, fixConfigDoc, "%s: expected a string, got %s", name, describe(n))
		}
	case reflect.Int, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return invalid(file, n, fixConfigDoc, "%s: expected an integer, got %s", name, describe(n))
		}
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			return invalid(file, n, fixConfigDoc, "%s: expected a number, got %s", name, describe(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return invalid(file, n, fixConfigDoc, "%s: expected true or false, got %s", name, describe(n))
		}
	}
	return nil
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		kind := strings.TrimPrefix(n.Tag, "!!")
		switch kind {
		case "str":
			kind = "string"
		case "int":
			kind = "integer"
		}
		return fmt.Sprintf("%s %q", kind, n.Value)
	}
	return "something else"
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func position(file string, n *yaml.Node) string {
	if file == "" {
		file = DefaultFileName
	}
	if n == nil {
		return file
	}
	return fmt.Sprintf("%s:%d:%d", file, n.Line, n.Column)
}

func invalid(file string, n *yaml.Node, fix, format string, args ...any) error {
	return perr.New(CodeInvalid, fix, "%s: %s", position(file, n), fmt.Sprintf(format, args...))
}

var lineRe = regexp.MustCompile(`line (\d+)(?:, column (\d+))?: `)

// syntaxError turns a yaml.v3 error ("yaml: line 3: ...") into file:line:col.
func syntaxError(file string, err error) error {
	if file == "" {
		file = DefaultFileName
	}
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := lineRe.FindStringSubmatchIndex(msg); m != nil {
		pos := file + ":" + msg[m[2]:m[3]]
		if m[4] >= 0 {
			pos += ":" + msg[m[4]:m[5]]
		}
		msg = pos + ": " + msg[:m[0]] + msg[m[1]:]
	} else {
		msg = file + ": " + msg
	}
	return perr.New(CodeInvalid, "fix the YAML syntax", "%s", msg)
}
