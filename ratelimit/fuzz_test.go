package ratelimit

import (
	"regexp"
	"strings"
	"testing"
)

var kvTokenChars = regexp.MustCompile(`^[-_=A-Za-z0-9]+$`)

// FuzzKeyEncoding: any concurrency key, model name or scope ID becomes a
// single valid KV key token, and distinct inputs never share one.
func FuzzKeyEncoding(f *testing.F) {
	for _, s := range []string{"", "A", "customer-42", "gpt-4o:latest", "a.b", "$(rm -rf /)", "../..", "=abc", "k", "*", ">"} {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ta, tb := kvToken(a), kvToken(b)
		if a != "" && !kvTokenChars.MatchString(ta) {
			t.Fatalf("kvToken(%q) = %q is not a KV token", a, ta)
		}
		if a != b && ta == tb {
			t.Fatalf("kvToken(%q) == kvToken(%q) == %q", a, b, ta)
		}
		ka, kb := SlotKey("ns", "q", a), SlotKey("ns", "q", b)
		if strings.Count(ka, ".") != 2 || (a != b && ka == kb) {
			t.Fatalf("slot keys %q / %q for %q / %q", ka, kb, a, b)
		}
		if sc, err := ParseScope(a); err == nil && sc.String() != a && !(sc.Kind == ScopeNamespace && a == "namespace") {
			t.Fatalf("ParseScope(%q) round-trips to %q", a, sc.String())
		}
	})
}
