package scripted

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/perr"
)

// Script is the ordered list of answers a scripted model gives: Entries[i]
// answers the request that already holds i assistant turns.
type Script struct {
	Name    string // file name (or another label) used in messages
	Entries []Entry
}

// Entry is one scripted LLM answer.
type Entry struct {
	Text       string     // final or accompanying text
	ToolCalls  []ToolCall // tools the model asks to run
	StopReason string     // one of llm.Stop*; empty means tool_use when ToolCalls is set, else end_turn
	Usage      *llm.Usage // reported as is; nil means a deterministic estimate
	Line       int        // 1-based line of the entry in the file, 0 when built in code
}

// ToolCall is one scripted tool call. Input is a JSON object ({} when the
// script leaves it out).
type ToolCall struct {
	Name  string
	Input json.RawMessage
}

// Keys of the YAML format.
const (
	keyText       = "text"
	keyToolCalls  = "tool_calls"
	keyStopReason = "stop_reason"
	keyUsage      = "usage"
	keyName       = "name"
	keyInput      = "input"
)

var (
	entryKeys    = []string{keyText, keyToolCalls, keyStopReason, keyUsage}
	toolCallKeys = []string{keyName, keyInput}
	usageKeys    = []string{"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"}
	stopReasons  = []string{llm.StopEndTurn, llm.StopToolUse, llm.StopMaxTokens, llm.StopOther}
)

const formatFix = "write the script as a YAML list with one entry per LLM call, " +
	"each with `text:` and/or `tool_calls: [{name: ..., input: {...}}]`, " +
	"optional `stop_reason:` and `usage:`"

// Load reads and parses a script file.
func Load(path string) (Script, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Script{}, perr.Wrap(err, llm.CodeBadConfig,
			"check the script path in the provider config",
			"cannot read LLM script %s", path)
	}
	return Parse(path, data)
}

// MustParse parses a script held in code (tests, examples) and panics on a
// malformed one.
func MustParse(name, src string) Script {
	s, err := Parse(name, []byte(src))
	if err != nil {
		panic(err)
	}
	return s
}

// Parse parses a YAML script. name labels error messages, which read
// "name:line: problem" and carry llm.CodeBadConfig.
func Parse(name string, data []byte) (Script, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Script{}, syntaxError(name, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return Script{}, perr.New(llm.CodeBadConfig, formatFix,
			"%s:1: the script is empty; expected a list of LLM answers", name)
	}
	entries, err := parseEntries(doc.Content[0])
	if err != nil {
		var ne *nodeError
		if errors.As(err, &ne) {
			return Script{}, perr.New(llm.CodeBadConfig, formatFix, "%s:%d:%d: %s", name, ne.line, ne.col, ne.msg)
		}
		return Script{}, perr.Wrap(err, llm.CodeBadConfig, formatFix, "%s: bad script", name)
	}
	return Script{Name: name, Entries: entries}, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns yaml.v3's "yaml: line N: msg" into "name:N: msg".
func syntaxError(name string, err error) error {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return perr.New(llm.CodeBadConfig, formatFix, "%s:%d: invalid YAML: %s", name, line, m[2])
	}
	return perr.New(llm.CodeBadConfig, formatFix, "%s: invalid YAML: %s",
		name, strings.TrimPrefix(err.Error(), "yaml: "))
}

func parseEntries(n *yaml.Node) ([]Entry, error) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		return nil, errAt(n, "expected a list of LLM answers, found %s", kindName(n))
	}
	entries := make([]Entry, 0, len(n.Content))
	for i, item := range n.Content {
		e, err := parseEntry(resolve(item))
		if err != nil {
			return nil, err
		}
		if len(e.ToolCalls) == 0 && e.Text == "" {
			return nil, errAt(item, "entry %d has neither text nor tool_calls", i+1)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func parseEntry(n *yaml.Node) (Entry, error) {
	e := Entry{Line: n.Line}
	err := eachKey(n, "an entry", entryKeys, func(key string, v *yaml.Node) error {
		var err error
		switch key {
		case keyText:
			e.Text, err = scalarString(v, keyText)
		case keyToolCalls:
			e.ToolCalls, err = parseToolCalls(v)
		case keyStopReason:
			e.StopReason, err = scalarString(v, keyStopReason)
			if err == nil && !slices.Contains(stopReasons, e.StopReason) {
				err = errAt(v, "stop_reason %q is not one of %s", e.StopReason, strings.Join(stopReasons, ", "))
			}
		case keyUsage:
			e.Usage, err = parseUsage(v)
		}
		return err
	})
	return e, err
}

func parseToolCalls(n *yaml.Node) ([]ToolCall, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, errAt(n, "tool_calls must be a list of {name, input}, found %s", kindName(n))
	}
	calls := make([]ToolCall, 0, len(n.Content))
	for _, item := range n.Content {
		item = resolve(item)
		var c ToolCall
		err := eachKey(item, "a tool call", toolCallKeys, func(key string, v *yaml.Node) error {
			var err error
			switch key {
			case keyName:
				c.Name, err = scalarString(v, keyName)
			case keyInput:
				if resolve(v).Kind != yaml.MappingNode {
					return errAt(v, "input must be a mapping of the tool's arguments, found %s", kindName(v))
				}
				c.Input, err = yamlToJSON(v)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		if c.Name == "" {
			return nil, errAt(item, "a tool call needs a name")
		}
		if c.Input == nil {
			c.Input = json.RawMessage("{}")
		}
		calls = append(calls, c)
	}
	return calls, nil
}

func parseUsage(n *yaml.Node) (*llm.Usage, error) {
	var u llm.Usage
	fields := map[string]*int64{
		"input_tokens":       &u.InputTokens,
		"output_tokens":      &u.OutputTokens,
		"cache_read_tokens":  &u.CacheReadTokens,
		"cache_write_tokens": &u.CacheWriteTokens,
	}
	err := eachKey(n, "usage", usageKeys, func(key string, v *yaml.Node) error {
		var x int64
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&x) != nil || x < 0 {
			return errAt(v, "usage %s must be a non-negative integer, found %q", key, v.Value)
		}
		*fields[key] = x
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &u, nil
}

// eachKey walks a mapping node, rejecting unknown and repeated keys.
func eachKey(n *yaml.Node, what string, known []string, f func(key string, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return errAt(n, "expected %s as a mapping (%s), found %s", what, strings.Join(known, ", "), kindName(n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || !slices.Contains(known, k.Value) {
			return errAt(k, "unknown key %q in %s; known keys: %s", k.Value, what, strings.Join(known, ", "))
		}
		if seen[k.Value] {
			return errAt(k, "key %q appears twice in %s", k.Value, what)
		}
		seen[k.Value] = true
		if err := f(k.Value, v); err != nil {
			return err
		}
	}
	return nil
}

func scalarString(n *yaml.Node, key string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		return "", errAt(n, "%s must be a string, found %s", key, kindName(n))
	}
	return n.Value, nil
}

// resolve follows aliases (bounded: yaml.v3 rejects alias cycles).
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < maxInputDepth; i++ {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch resolve(n).Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "an unsupported YAML node"
}
