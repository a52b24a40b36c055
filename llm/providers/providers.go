// Package providers links every built-in LLM provider (anthropic, openai,
// scripted) into a binary so llm.New can build any of them:
//
//	import _ "github.com/polos-run/polos/llm/providers"
package providers

import (
	_ "github.com/polos-run/polos/llm/anthropic" // registers "anthropic"
	_ "github.com/polos-run/polos/llm/openai"    // registers "openai"
	_ "github.com/polos-run/polos/llm/scripted"  // registers "scripted"
)
