package agent

import (
	"encoding/json"

	"github.com/polos-run/polos/llm"
)

func schema(s string) json.RawMessage { return json.RawMessage(s) }

// toolDefs are the tool descriptions the model sees.
var toolDefs = map[string]llm.Tool{
	ToolExec: {Name: ToolExec, Description: "Run a shell command in the sandbox workspace. Returns exit_code, stdout, stderr.",
		InputSchema: schema(`{"type":"object","properties":{"command":{"type":"string"},"cwd":{"type":"string"},"env":{"type":"object","additionalProperties":{"type":"string"}},"timeout":{"type":"integer","description":"seconds, default 300"}},"required":["command"]}`)},
	ToolRead: {Name: ToolRead, Description: "Read a text file (line based).",
		InputSchema: schema(`{"type":"object","properties":{"path":{"type":"string"},"offset":{"type":"integer"},"limit":{"type":"integer"}},"required":["path"]}`)},
	ToolWrite: {Name: ToolWrite, Description: "Create or replace a file (parent directories are created).",
		InputSchema: schema(`{"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}},"required":["path","content"]}`)},
	ToolEdit: {Name: ToolEdit, Description: "Replace old_text by new_text in a file; old_text must occur exactly once unless replace_all.",
		InputSchema: schema(`{"type":"object","properties":{"path":{"type":"string"},"old_text":{"type":"string"},"new_text":{"type":"string"},"replace_all":{"type":"boolean"}},"required":["path","old_text","new_text"]}`)},
	ToolGlob: {Name: ToolGlob, Description: "List files matching a glob pattern (** crosses directories).",
		InputSchema: schema(`{"type":"object","properties":{"pattern":{"type":"string"},"cwd":{"type":"string"},"ignore":{"type":"array","items":{"type":"string"}}},"required":["pattern"]}`)},
	ToolGrep: {Name: ToolGrep, Description: "Search file contents with a regular expression.",
		InputSchema: schema(`{"type":"object","properties":{"pattern":{"type":"string"},"cwd":{"type":"string"},"include":{"type":"string"},"max_results":{"type":"integer"},"context_lines":{"type":"integer"}},"required":["pattern"]}`)},
	ToolAskUser: {Name: ToolAskUser, Description: "Ask the user a question and wait for the answer.",
		InputSchema: schema(`{"type":"object","properties":{"question":{"type":"string"},"fields":{"type":"array","items":{"type":"object"}}},"required":["question"]}`)},
}
