package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/polos-run/polos/perr"
	"gopkg.in/yaml.v3"
)

// fixPolicyFile is the fix line of every error about a policy file's content.
const fixPolicyFile = "correct the policy file; docs/policy.md lists the keys and values"

// Load reads and parses a policy file (see Parse). A missing or unreadable
// file is CodeUnreadable.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, perr.Wrap(err, CodeUnreadable, "check the path given for the policy file", "policy file %s cannot be read", path)
	}
	return Parse(data, path)
}

// Parse parses a policy in YAML (both forms at the top level; see Config).
// An empty document is the empty policy. Errors are *perr.Error with
// CodeInvalid whose message starts with filename:line:col and says what is
// wrong: YAML syntax, an unknown key, a wrong type, an unknown decision or a
// bad pattern. A relative path_restriction is made absolute against the
// directory of filename (when filename is not empty).
func Parse(data []byte, filename string) (*Policy, error) {
	name := filename
	if name == "" {
		name = "policy"
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(name, err)
	}
	var cfg Config
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			root = nil
		}
		if root != nil {
			if err := checkKeys(name, root, configSchema, nil); err != nil {
				return nil, err
			}
			if err := root.Decode(&cfg); err != nil {
				return nil, yamlError(name, err)
			}
		}
	}
	if filename != "" && cfg.PathRestriction != "" && !filepath.IsAbs(cfg.PathRestriction) {
		if dir, err := filepath.Abs(filepath.Dir(filename)); err == nil {
			cfg.PathRestriction = filepath.Join(dir, cfg.PathRestriction)
		}
	}
	norm, ferr := normalize(cfg)
	if ferr != nil {
		line, col := nodePosition(&doc, ferr.path)
		return nil, perr.New(CodeInvalid, ferr.fix, "%s: %s", position(name, line, col), ferr.where()+": "+ferr.msg)
	}
	return compile(norm), nil
}

func position(name string, line, col int) string {
	switch {
	case line > 0 && col > 0:
		return fmt.Sprintf("%s:%d:%d", name, line, col)
	case line > 0:
		return fmt.Sprintf("%s:%d", name, line)
	default:
		return name
	}
}

// schema describes the keys a mapping may hold: nil children means any
// value; a schema with anyKey set accepts any key (capabilities).
type schema struct {
	keys   map[string]*schema
	anyKey *schema // the schema of every value, for maps with free keys
	leaf   string  // "list" (of strings) or "value" (one string); "" for a mapping
}

var (
	listLeaf    = &schema{leaf: "list"}
	valueLeaf   = &schema{leaf: "value"}
	rulesSchema = &schema{keys: map[string]*schema{"allow": listLeaf, "ask": listLeaf, "deny": listLeaf}}
)

var configSchema = &schema{keys: map[string]*schema{
	"commands":         rulesSchema,
	"capabilities":     {anyKey: valueLeaf},
	"default":          valueLeaf,
	"paths":            rulesSchema,
	"exec":             {keys: map[string]*schema{"security": valueLeaf, "allowlist": listLeaf}},
	"file_approval":    valueLeaf,
	"path_restriction": valueLeaf,
}}

// checkKeys rejects unknown keys and values of the wrong shape with their
// position, so a typo such as `comands:` is an error rather than a silently
// empty policy.
func checkKeys(name string, n *yaml.Node, s *schema, path []string) error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	what := strings.Join(path, ".")
	switch s.leaf {
	case "list":
		ok := n.Kind == yaml.SequenceNode
		for _, item := range n.Content {
			ok = ok && item.Kind == yaml.ScalarNode
		}
		if !ok {
			return perr.New(CodeInvalid, fixPolicyFile, "%s: %s must be a list of patterns such as [\"ls *\"], found %s", position(name, n.Line, n.Column), what, kindName(n))
		}
		return nil
	case "value":
		if n.Kind != yaml.ScalarNode {
			return perr.New(CodeInvalid, fixPolicyFile, "%s: %s must be a single value, found %s", position(name, n.Line, n.Column), what, kindName(n))
		}
		return nil
	}
	if n.Kind != yaml.MappingNode {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		if what == "" {
			what = "the policy"
		}
		return perr.New(CodeInvalid, fixPolicyFile, "%s: %s must be a mapping of keys to values, found %s", position(name, n.Line, n.Column), what, kindName(n))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		sub, ok := s.keys[k.Value]
		if s.anyKey != nil {
			sub, ok = s.anyKey, true
		}
		if !ok {
			return perr.New(CodeInvalid, fixPolicyFile, "%s: unknown key %q%s; expected one of %s", position(name, k.Line, k.Column), k.Value, under(path), keyList(s))
		}
		if err := checkKeys(name, v, sub, append(path, k.Value)); err != nil {
			return err
		}
	}
	return nil
}

func under(path []string) string {
	if len(path) == 0 {
		return ""
	}
	return " under " + strings.Join(path, ".")
}

func keyList(s *schema) string {
	order := []string{"commands", "capabilities", "default", "paths", "exec", "file_approval", "path_restriction", "allow", "ask", "deny", "security", "allowlist"}
	var out []string
	for _, k := range order {
		if _, ok := s.keys[k]; ok {
			out = append(out, k)
		}
	}
	return strings.Join(out, ", ")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	default:
		return "something else"
	}
}

// nodePosition finds the line and column of the value at path ("commands",
// "allow", 2) in the document; 0, 0 when it is not found.
func nodePosition(doc *yaml.Node, path []any) (int, int) {
	if len(doc.Content) == 0 {
		return 0, 0
	}
	n := doc.Content[0]
	for _, step := range path {
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		var next *yaml.Node
		switch s := step.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == s {
						next = n.Content[i+1]
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && s < len(n.Content) {
				next = n.Content[s]
			}
		}
		if next == nil {
			return n.Line, n.Column
		}
		n = next
	}
	return n.Line, n.Column
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// yamlError turns a yaml.v3 error (syntax or type) into a coded error with
// the file and line.
func yamlError(name string, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = strings.TrimPrefix(strings.TrimPrefix(msg, m[0]), ": ")
	}
	msg = strings.ReplaceAll(msg, "policy.", "")
	return perr.New(CodeInvalid, fixPolicyFile, "%s: %s", position(name, line, 0), msg)
}
