package scripted

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Limits that keep a hostile script (deep nesting, alias bombs) from eating
// the process.
const (
	maxInputDepth = 64
	maxInputBytes = 1 << 20 // JSON bytes one tool call input may expand to
)

// nodeError is a problem at a YAML position; Parse turns it into a coded
// error with file:line.
type nodeError struct {
	line, col int
	msg       string
}

func (e *nodeError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

func errAt(n *yaml.Node, format string, args ...any) *nodeError {
	return &nodeError{line: n.Line, col: n.Column, msg: fmt.Sprintf(format, args...)}
}

// yamlToJSON encodes a YAML node as JSON, keeping mapping keys in the order
// they were written (so the model's tool input reads as the script author
// wrote it) and scalars as their YAML types: strings stay strings even when
// they look like dates, integers keep their value, and values JSON cannot
// represent (.inf, .nan, non-scalar keys) are errors.
func yamlToJSON(n *yaml.Node) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := writeJSON(&buf, n, 0); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeJSON(buf *bytes.Buffer, n *yaml.Node, depth int) error {
	if depth > maxInputDepth {
		return errAt(n, "tool input nests deeper than %d levels", maxInputDepth)
	}
	if buf.Len() > maxInputBytes {
		return errAt(n, "tool input is larger than %d bytes once aliases are expanded", maxInputBytes)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			buf.WriteString("null")
			return nil
		}
		return writeJSON(buf, n.Content[0], depth+1)
	case yaml.AliasNode:
		if n.Alias == nil {
			return errAt(n, "unresolved alias")
		}
		return writeJSON(buf, n.Alias, depth+1)
	case yaml.SequenceNode:
		buf.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := writeJSON(buf, c, depth+1); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
		return nil
	case yaml.MappingNode:
		buf.WriteByte('{')
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return errAt(k, "tool input keys must be plain strings")
			}
			if seen[k.Value] {
				return errAt(k, "key %q appears twice", k.Value)
			}
			seen[k.Value] = true
			if i > 0 {
				buf.WriteByte(',')
			}
			writeString(buf, k.Value)
			buf.WriteByte(':')
			if err := writeJSON(buf, v, depth+1); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
		return nil
	case yaml.ScalarNode:
		return writeScalar(buf, n)
	}
	return errAt(n, "unsupported YAML node")
}

func writeScalar(buf *bytes.Buffer, n *yaml.Node) error {
	switch n.ShortTag() {
	case "!!null":
		buf.WriteString("null")
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return errAt(n, "bad boolean %q", n.Value)
		}
		buf.WriteString(strconv.FormatBool(b))
	case "!!int":
		var v any
		if err := n.Decode(&v); err != nil {
			return errAt(n, "bad integer %q", n.Value)
		}
		switch i := v.(type) {
		case int:
			buf.WriteString(strconv.FormatInt(int64(i), 10))
		case int64:
			buf.WriteString(strconv.FormatInt(i, 10))
		case uint64:
			buf.WriteString(strconv.FormatUint(i, 10))
		default:
			// Too large for 64 bits: keep the digits as a string rather
			// than silently rounding.
			writeString(buf, n.Value)
		}
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return errAt(n, "bad number %q", n.Value)
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return errAt(n, "%s cannot be written as JSON", n.Value)
		}
		buf.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
	case "!!str", "!!timestamp", "!!binary":
		writeString(buf, n.Value)
	default:
		return errAt(n, "unsupported YAML tag %s", n.Tag)
	}
	return nil
}

// writeString writes s as a JSON string without escaping <, > and & (the
// model would not, and the text should reach the tool as written).
func writeString(buf *bytes.Buffer, s string) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)           // a Go string always encodes
	buf.Truncate(buf.Len() - 1) // Encode appends a newline
}
