package policy

import "testing"

// BenchmarkCheckCommand measures typical agent commands against the
// allowlist seed policy (parse as bash and sh, match, hazards).
func BenchmarkCheckCommand(b *testing.B) {
	p, err := New(seedPolicies["tanstack"])
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, cmd string }{
		{"simple", "pnpm test"},
		{"compound", "cd src && ls -la | grep foo > out.txt; echo done"},
		{"hostile", `ls $(rm -rf ~) && bash -c "sudo ls" | xargs rm -rf`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.CheckCommand(bc.cmd, seedContext)
			}
		})
	}
}

func TestCoversAndOverlaps(t *testing.T) {
	w := wildcard
	cases := []struct {
		p, t             []rune
		covers, overlaps bool
	}{
		{globRunes("ls *"), []rune("ls -la"), true, true},
		{globRunes("ls *"), []rune("ls"), false, false},
		{globRunes("ls *"), append([]rune("ls "), w), true, true},
		{globRunes("rm -rf *"), append([]rune("rm "), w, ' ', '/'), false, true},
		{globRunes("git diff"), append([]rune("git "), w), false, true},
		{globRunes("*"), []rune{w}, true, true},
		{globRunes("a*b"), []rune{w}, false, true},
		{globRunes("a*b"), []rune("ab"), true, true},
		{globRunes("a*b"), []rune("ba"), false, false},
		{globRunes("curl *x.com*"), append([]rune("curl "), w), false, true},
	}
	for _, tc := range cases {
		if got := covers(tc.p, tc.t); got != tc.covers {
			t.Errorf("covers(%q, %q) = %v", string(tc.p), string(tc.t), got)
		}
		if got := overlaps(tc.p, tc.t); got != tc.overlaps {
			t.Errorf("overlaps(%q, %q) = %v", string(tc.p), string(tc.t), got)
		}
	}
	if got := string(globRunes(loosen("/usr/bin/curl * internal.example.com*"))); got != "curl "+string(w)+"internal.example.com"+string(w) {
		t.Errorf("loosen: %q", got)
	}
}

func TestDecodeANSIC(t *testing.T) {
	for in, want := range map[string]string{`\x72m`: "rm", `\162m`: "rm", `a\nb`: "a\nb", `\u0072m`: "rm", `ab\x00cd`: "ab", `\'`: "'"} {
		got, ok := decodeANSIC(in)
		if !ok || got != want {
			t.Errorf("decodeANSIC(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, ok := decodeANSIC(`\q`); ok {
		t.Error(`\q should be unknown`)
	}
}
