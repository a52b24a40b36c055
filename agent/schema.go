package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	invopop "github.com/invopop/jsonschema"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/polos-run/polos/perr"
)

// CodeOutputSchema: the final answer does not match output_schema.
const CodeOutputSchema perr.Code = "OUTPUT_SCHEMA"

// compileSchema compiles an agent's output_schema (nil when there is none).
func compileSchema(agentID string, raw json.RawMessage) (*jsonschema.Schema, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, perr.Wrap(err, CodeAgentConfig, "output_schema must be a JSON Schema object", "agent %s: output_schema is not valid JSON", agentID)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("output_schema.json", doc); err != nil {
		return nil, perr.Wrap(err, CodeAgentConfig, "fix output_schema", "agent %s", agentID)
	}
	s, err := c.Compile("output_schema.json")
	if err != nil {
		return nil, perr.Wrap(err, CodeAgentConfig, "fix output_schema", "agent %s: output_schema does not compile", agentID)
	}
	return s, nil
}

// checkOutput parses the answer as JSON (a ```json fence is accepted) and
// validates it; the error says what to fix, for the model's fix-up turn.
func checkOutput(s *jsonschema.Schema, text string) (json.RawMessage, error) {
	body := strings.TrimSpace(text)
	if strings.HasPrefix(body, "```") {
		body = strings.TrimPrefix(body, "```json")
		body = strings.TrimPrefix(body, "```")
		body = strings.TrimSuffix(strings.TrimSpace(body), "```")
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(body))
	if err != nil {
		return nil, perr.New(CodeOutputSchema, "answer with JSON only", "the answer is not JSON: %v", err)
	}
	if err := s.Validate(doc); err != nil {
		return nil, perr.New(CodeOutputSchema, "answer with JSON matching the schema", "the answer does not match the output schema: %v", err)
	}
	return json.RawMessage(body), nil
}

// inputSchema is the JSON Schema of a tool's arguments, derived from its
// request type Req: one property per JSON field, required unless the field
// is omitempty; describe adds property descriptions and hide removes
// fields the model may not set. Structs nested in a request (ask_user's
// fields) are described as plain objects. It panics on a type it cannot
// describe: the table is fixed at build time and its test catches that.
func inputSchema[Req any](describe map[string]string, hide []string) json.RawMessage {
	root := reflect.TypeFor[Req]()
	r := invopop.Reflector{DoNotReference: true, ExpandedStruct: true, Anonymous: true, AllowAdditionalProperties: true,
		Mapper: func(t reflect.Type) *invopop.Schema {
			if t.Kind() == reflect.Struct && t != root {
				return &invopop.Schema{Type: "object"}
			}
			return nil
		}}
	s := r.ReflectFromType(root)
	s.Version = "" // no "$schema": the providers take a bare object schema
	for _, name := range hide {
		if _, ok := s.Properties.Delete(name); !ok {
			panic(fmt.Sprintf("agent: %s has no field %q to hide", root, name))
		}
		s.Required = slices.DeleteFunc(s.Required, func(f string) bool { return f == name })
	}
	for name, d := range describe {
		p, ok := s.Properties.Get(name)
		if !ok {
			panic(fmt.Sprintf("agent: %s has no field %q to describe", root, name))
		}
		p.Description = d
	}
	b, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("agent: schema of %s: %v", root, err))
	}
	return b
}
