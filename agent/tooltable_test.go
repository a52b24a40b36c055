package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/policy"
)

// TestToolTable walks every built-in tool: it has a schema that compiles,
// its example request matches that schema and parses, and it has a policy
// check (or asks a person, who is then its gate) and one way to run.
func TestToolTable(t *testing.T) {
	if got := builtinNames(); !slices.Equal(got, AllTools) {
		t.Fatalf("AllTools = %v, the table holds %v", AllTools, got)
	}
	pol, err := policy.New(policy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	pc := policy.Context{Env: policy.EnvLocal, Workspace: t.TempDir()}
	for _, spec := range builtinList {
		t.Run(spec.Def.Name, func(t *testing.T) {
			if builtinTools[spec.Def.Name].Def.Name != spec.Def.Name {
				t.Fatalf("the name index does not find %q", spec.Def.Name)
			}
			if spec.Def.Description == "" {
				t.Error("no description for the model")
			}
			schema := compileToolSchema(t, spec.Def.InputSchema)
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(spec.Example))
			if err != nil {
				t.Fatalf("example %s is not JSON: %v", spec.Example, err)
			}
			if err := schema.Validate(doc); err != nil {
				t.Errorf("example %s does not match the schema %s: %v", spec.Example, spec.Def.InputSchema, err)
			}
			req, err := spec.Parse(spec.Example)
			if err != nil {
				t.Fatalf("example %s does not parse: %v", spec.Example, err)
			}
			if spec.Approval == nil || spec.Rejected == nil {
				t.Error("no approval form or rejected result")
			}
			switch {
			case spec.Ask != nil:
				if spec.PolicyCheck != nil || spec.Run != nil {
					t.Error("a tool that asks a person has neither a policy check nor a sandbox run")
				}
			case spec.PolicyCheck == nil || spec.Run == nil:
				t.Fatal("a sandbox tool needs a policy check and a run")
			default:
				chk := spec.PolicyCheck(pol, pc, req)
				if !slices.Contains([]policy.Decision{policy.DecisionAllow, policy.DecisionAsk, policy.DecisionDeny}, chk.Result.Decision) {
					t.Errorf("policy check of the example decided %q", chk.Result.Decision)
				}
			}
		})
	}
}

func compileToolSchema(t *testing.T, raw json.RawMessage) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("schema %s is not JSON: %v", raw, err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("tool.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("tool.json")
	if err != nil {
		t.Fatalf("schema %s does not compile: %v", raw, err)
	}
	return s
}

// TestUnknownTool: a name that is not in the table is a coded error that
// names it and lists the tools there are, and an agent declaring one does
// not register.
func TestUnknownTool(t *testing.T) {
	_, err := lookupTool("rm_rf")
	if perr.CodeOf(err) != CodeUnknownTool {
		t.Fatalf("lookupTool(rm_rf) = %v, want code %s", err, CodeUnknownTool)
	}
	if msg := err.Error(); !strings.Contains(msg, `"rm_rf"`) || !strings.Contains(msg, strings.Join(AllTools, ", ")) {
		t.Errorf("the error should name the tool and the tools there are: %s", msg)
	}
	err = Register(polos.NewRegistry(), Config{ID: "a", Tools: []string{ToolRead, "rm_rf"}}, Deps{})
	if perr.CodeOf(err) != CodeAgentConfig || !perr.Has(err, CodeUnknownTool) {
		t.Fatalf("Register with an unknown tool = %v, want %s carrying %s", err, CodeAgentConfig, CodeUnknownTool)
	}
}

// TestToolSchemasUnchanged pins what the model sees of the built-in tools:
// the digest of a request offering all of them is the one recorded in
// histories made before the schemas were derived from the request types,
// so a derived schema that drifts (a new field, a lost description) shows
// here and not as a silently different LLM request.
func TestToolSchemasUnchanged(t *testing.T) {
	req := llm.Request{Model: "m"}
	for _, name := range AllTools {
		req.Tools = append(req.Tools, builtinTools[name].Def)
	}
	const want = "6ef833b59f63712baef65a4c815eaa762ef7d91ddf02a674cc575ca98d6f45a3"
	if got := llm.RequestDigest(req); got != want {
		t.Fatalf("the built-in tools changed what the model sees (digest %s, want %s); if intended, update the digest and say why in the ADR", got, want)
	}
}

// TestToolTranscripts runs testdata/tools.txt. Regenerate after a
// deliberate change with
//
//	go test ./agent -run TestToolTranscripts -rewrite
//
// Commands:
//
//	schema tool=NAME
//
// prints the input schema the model sees.
//
//	parse tool=NAME
//	<arguments JSON>
//
// prints the parsed request, or the error the model reads.
func TestToolTranscripts(t *testing.T) {
	datadriven.RunTest(t, "testdata/tools.txt", func(t *testing.T, d *datadriven.TestData) string {
		var name string
		d.ScanArgs(t, "tool", &name)
		spec, err := lookupTool(name)
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		switch d.Cmd {
		case "schema":
			var out bytes.Buffer
			if err := json.Indent(&out, spec.Def.InputSchema, "", "  "); err != nil {
				d.Fatalf(t, "schema of %s: %v", name, err)
			}
			return out.String() + "\n"
		case "parse":
			req, err := spec.Parse(json.RawMessage(d.Input))
			if err != nil {
				return "error: " + err.Error() + "\n"
			}
			b, _ := json.Marshal(req)
			return fmt.Sprintf("%T %s\n", req, b)
		}
		d.Fatalf(t, "unknown command %q", d.Cmd)
		return ""
	})
}
