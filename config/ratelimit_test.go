package config_test

import (
	"testing"

	"github.com/polos-run/polos/config"
)

func TestRateLimitsAndExamplesParse(t *testing.T) {
	c, err := config.Parse([]byte("rate_limits:\n  - {provider: anthropic, model: claude-sonnet-4-5, requests_per_minute: 50, tokens_per_minute: 40000}\n"), "polos.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.RateLimits) != 1 || c.RateLimits[0].Model != "claude-sonnet-4-5" {
		t.Fatalf("%+v", c.RateLimits)
	}
	for _, p := range []string{"../examples/local-coding-agent/polos.yaml", "../examples/docker-coding-agent/polos.yaml"} {
		if _, err := config.Load(p); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
}

func TestOutputSchemaIsKeptRaw(t *testing.T) {
	c, err := config.Parse([]byte("agents:\n  - id: a\n    provider: scripted\n    script: s.yaml\n    output_schema: {type: object, required: [answer]}\n"), "polos.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Agents[0].OutputSchema.Kind == 0 {
		t.Fatal("output_schema lost")
	}
}
