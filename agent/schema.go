package agent

import (
	"bytes"
	"encoding/json"
	"strings"

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
