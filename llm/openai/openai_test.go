package openai_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/llmfake"
	"github.com/polos-run/polos/llm/llmtest"
	"github.com/polos-run/polos/llm/openai"
	"github.com/polos-run/polos/llm/scripted"
	"github.com/polos-run/polos/perr"
)

func newModel(t *testing.T, baseURL string) llm.Model {
	t.Helper()
	m, err := openai.New(llm.ProviderConfig{APIKey: "test-key", BaseURL: baseURL})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestConformance(t *testing.T) {
	llmtest.Run(t, llmtest.Provider{Start: llmfake.NewOpenAI, New: newModel})
}

// TestWireShape checks what the SDK really sent: function tools, the system
// message first, tool messages answering each call (error results prefixed),
// and include_usage on streams.
func TestWireShape(t *testing.T) {
	fake := llmfake.NewOpenAI(scripted.MustParse("s.yaml", llmtest.ToolScript))
	defer fake.Close()
	m := newModel(t, fake.URL)
	req := llmtest.FirstRequest()
	resp, _, err := llmtest.Generate(t, m, req, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := llmtest.Generate(t, m, llmtest.FollowUp(req, resp, "denied by policy", true), false); err != nil {
		t.Fatal(err)
	}
	recs := fake.Requests()
	var first struct {
		Messages      []map[string]any `json:"messages"`
		Tools         []map[string]any `json:"tools"`
		StreamOptions map[string]any   `json:"stream_options"`
		MaxTokens     int              `json:"max_completion_tokens"`
	}
	if err := json.Unmarshal(recs[0].Body, &first); err != nil {
		t.Fatal(err)
	}
	if first.Messages[0]["role"] != "system" || first.Tools[0]["type"] != "function" ||
		first.StreamOptions["include_usage"] != true || first.MaxTokens != 1024 {
		t.Fatalf("first request body: %s", recs[0].Body)
	}
	var second struct {
		Messages []map[string]any `json:"messages"`
	}
	if err := json.Unmarshal(recs[1].Body, &second); err != nil {
		t.Fatal(err)
	}
	tool := second.Messages[len(second.Messages)-1]
	if tool["role"] != "tool" || tool["tool_call_id"] != "call_0_0" || tool["content"] != openai.ErrorResultPrefix+"denied by policy" {
		t.Fatalf("tool message = %v", tool)
	}
	if strings.Contains(string(recs[1].Body), "stream_options") {
		t.Errorf("a plain request must not send stream_options: %s", recs[1].Body)
	}
}

func TestMissingKeyNamesEnvVar(t *testing.T) {
	t.Setenv(openai.EnvAPIKey, "")
	_, err := openai.New(llm.ProviderConfig{})
	if perr.CodeOf(err) != llm.CodeBadConfig || !strings.Contains(err.Error(), openai.EnvAPIKey) {
		t.Fatalf("err = %v, want %s naming %s", err, llm.CodeBadConfig, openai.EnvAPIKey)
	}
}

func TestBadToolSchemaIsConfigError(t *testing.T) {
	fake := llmfake.NewOpenAI(scripted.MustParse("s.yaml", "- text: hi"))
	defer fake.Close()
	req := llmtest.FirstRequest()
	req.Tools = []llm.Tool{{Name: "x", InputSchema: json.RawMessage(`[1,2]`)}}
	_, _, err := llmtest.Generate(t, newModel(t, fake.URL), req, false)
	if perr.CodeOf(err) != llm.CodeBadConfig {
		t.Fatalf("err = %v", err)
	}
	if fake.RequestCount() != 0 {
		t.Fatal("a bad request must not reach the API")
	}
}
