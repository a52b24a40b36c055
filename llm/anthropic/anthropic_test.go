package anthropic_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/anthropic"
	"github.com/polos-run/polos/llm/llmfake"
	"github.com/polos-run/polos/llm/llmtest"
	"github.com/polos-run/polos/llm/scripted"
	"github.com/polos-run/polos/perr"
)

func newModel(t *testing.T, baseURL string) llm.Model {
	t.Helper()
	m, err := anthropic.New(llm.ProviderConfig{APIKey: "test-key", BaseURL: baseURL})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestConformance(t *testing.T) {
	llmtest.Run(t, llmtest.Provider{Start: llmfake.NewAnthropic, New: newModel})
}

// TestCacheControlMarkers checks the request body the fake received carries
// cache_control ephemeral on the system prompt, the last tool and the last
// block of the last message, and nowhere else.
func TestCacheControlMarkers(t *testing.T) {
	script := scripted.MustParse("s.yaml", llmtest.ToolScript)
	for _, stream := range []bool{false, true} {
		fake := llmfake.NewAnthropic(script)
		defer fake.Close()
		m := newModel(t, fake.URL)
		req := llmtest.FirstRequest()
		resp, _, err := llmtest.Generate(t, m, req, stream)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := llmtest.Generate(t, m, llmtest.FollowUp(req, resp, "written", false), stream); err != nil {
			t.Fatal(err)
		}
		for i, rec := range fake.Requests() {
			var body struct {
				System   []map[string]any `json:"system"`
				Tools    []map[string]any `json:"tools"`
				Messages []struct {
					Content []map[string]any `json:"content"`
				} `json:"messages"`
			}
			if err := json.Unmarshal(rec.Body, &body); err != nil {
				t.Fatal(err)
			}
			ephemeral := func(v map[string]any) bool {
				cc, ok := v["cache_control"].(map[string]any)
				return ok && cc["type"] == "ephemeral"
			}
			count := strings.Count(string(rec.Body), `"cache_control"`)
			last := body.Messages[len(body.Messages)-1].Content
			switch {
			case !ephemeral(body.System[0]):
				t.Errorf("request %d: system has no cache_control: %s", i, rec.Body)
			case !ephemeral(body.Tools[len(body.Tools)-1]) || ephemeral(body.Tools[0]):
				t.Errorf("request %d: cache_control not on exactly the last tool: %v", i, body.Tools)
			case !ephemeral(last[len(last)-1]):
				t.Errorf("request %d: last message block has no cache_control: %v", i, last)
			case count != 3:
				t.Errorf("request %d: %d cache_control markers, want 3", i, count)
			}
		}
		// The second request answers with a tool_result block carrying is_error=false.
		recs := fake.Requests()
		if !strings.Contains(string(recs[1].Body), `"type":"tool_result"`) {
			t.Errorf("tool result not sent as a tool_result block: %s", recs[1].Body)
		}
	}
}

func TestToolResultIsError(t *testing.T) {
	fake := llmfake.NewAnthropic(scripted.MustParse("s.yaml", llmtest.ToolScript))
	defer fake.Close()
	m := newModel(t, fake.URL)
	req := llmtest.FirstRequest()
	resp, _, err := llmtest.Generate(t, m, req, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := llmtest.Generate(t, m, llmtest.FollowUp(req, resp, "denied", true), false); err != nil {
		t.Fatal(err)
	}
	last, _ := fake.Last()
	tr := last.Request.Messages[2].ToolResults[0]
	if !tr.IsError || tr.Content != "denied" || !strings.Contains(string(last.Body), `"is_error":true`) {
		t.Fatalf("tool result = %+v, body %s", tr, last.Body)
	}
}

// A model may produce tool input that is not JSON; sending it back must not
// break the next request.
func TestMalformedToolInputIsSentBack(t *testing.T) {
	fake := llmfake.NewAnthropic(scripted.MustParse("s.yaml", llmtest.ToolScript))
	defer fake.Close()
	req := llmtest.FirstRequest()
	bad := llm.Response{ToolCalls: []llm.ToolCall{{ID: "toolu_1", Name: "exec", Input: json.RawMessage(`{"command": "ls`)}}}
	next := llmtest.FollowUp(req, bad, "invalid JSON input", true)
	resp, _, err := llmtest.Generate(t, newModel(t, fake.URL), next, false)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text == "" {
		t.Fatalf("no answer: %+v", resp)
	}
	last, _ := fake.Last()
	if !strings.Contains(string(last.Body), anthropic.MalformedInputKey) {
		t.Fatalf("malformed input not wrapped: %s", last.Body)
	}
}

func TestMissingKeyNamesEnvVar(t *testing.T) {
	t.Setenv(anthropic.EnvAPIKey, "")
	_, err := anthropic.New(llm.ProviderConfig{})
	if perr.CodeOf(err) != llm.CodeBadConfig || !strings.Contains(err.Error(), anthropic.EnvAPIKey) {
		t.Fatalf("err = %v, want %s naming %s", err, llm.CodeBadConfig, anthropic.EnvAPIKey)
	}
	t.Setenv(anthropic.EnvAPIKey, "from-env")
	if _, err := anthropic.New(llm.ProviderConfig{}); err != nil {
		t.Fatalf("key from env: %v", err)
	}
}

func TestDefaultModelAndMissingModel(t *testing.T) {
	fake := llmfake.NewAnthropic(scripted.MustParse("s.yaml", "- text: hi"))
	defer fake.Close()
	req := llmtest.FirstRequest()
	req.Model = ""
	_, _, err := llmtest.Generate(t, newModel(t, fake.URL), req, false)
	if perr.CodeOf(err) != llm.CodeBadConfig {
		t.Fatalf("err = %v, want %s", err, llm.CodeBadConfig)
	}
	m, _ := anthropic.New(llm.ProviderConfig{APIKey: "k", BaseURL: fake.URL, Model: "claude-default"})
	resp, _, err := llmtest.Generate(t, m, req, false)
	if err != nil || resp.Model != "claude-default" {
		t.Fatalf("resp %+v err %v", resp, err)
	}
	if fake.RequestCount() != 1 {
		t.Fatalf("a request without a model must not reach the API")
	}
}
