package providers_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/llm/llmfake"
	_ "github.com/polos-run/polos/llm/providers"
	"github.com/polos-run/polos/llm/scripted"
	"github.com/polos-run/polos/perr"
)

// Every provider is reachable through llm.New once this package is linked,
// and all three give the same answer to the same turn of the same script.
func TestNewBuildsEveryProvider(t *testing.T) {
	const src = "- text: Hello from the script.\n"
	path := filepath.Join(t.TempDir(), "s.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	script := scripted.MustParse(path, src)
	a, o := llmfake.NewAnthropic(script), llmfake.NewOpenAI(script)
	defer a.Close()
	defer o.Close()
	configs := []llm.ProviderConfig{
		{Provider: llm.ProviderAnthropic, Model: "claude", APIKey: "k", BaseURL: a.URL},
		{Provider: llm.ProviderOpenAI, Model: "gpt", APIKey: "k", BaseURL: o.URL},
		{Provider: llm.ProviderScripted, Script: path},
	}
	req := llm.Request{Messages: []llm.Message{{Role: llm.RoleUser, Text: "hi"}}}
	for _, cfg := range configs {
		m, err := llm.New(cfg)
		if err != nil {
			t.Fatalf("%s: %v", cfg.Provider, err)
		}
		resp, err := m.Generate(context.Background(), req, nil)
		if err != nil || resp.Text != "Hello from the script." || resp.StopReason != llm.StopEndTurn {
			t.Fatalf("%s: %+v %v", cfg.Provider, resp, err)
		}
	}
}

func TestNewMissingKeys(t *testing.T) {
	for provider, env := range map[string]string{llm.ProviderAnthropic: "ANTHROPIC_API_KEY", llm.ProviderOpenAI: "OPENAI_API_KEY"} {
		t.Setenv(env, "")
		_, err := llm.New(llm.ProviderConfig{Provider: provider})
		if perr.CodeOf(err) != llm.CodeBadConfig || !strings.Contains(err.Error(), env) {
			t.Errorf("%s: %v", provider, err)
		}
	}
}
