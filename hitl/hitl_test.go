package hitl_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/replay"
)

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func richForm(t testing.TB) json.RawMessage {
	return mustJSON(t, hitl.AskUser("Which deploy?", []hitl.Field{
		{Key: "env", Type: hitl.FieldSelect, Label: "Environment", Required: true, Options: []hitl.Option{{Value: "staging"}, {Value: "prod", Label: "Production"}}},
		{Key: "replicas", Type: hitl.FieldNumber, Required: true},
		{Key: "notify", Type: hitl.FieldEmail},
		{Key: "dashboard", Type: hitl.FieldURL},
		{Key: "notes", Type: hitl.FieldTextarea},
		{Key: "confirm", Type: hitl.FieldBoolean, Required: true},
		{Key: "name", Type: hitl.FieldText, Required: true},
	}))
}

func TestValidate(t *testing.T) {
	exec := mustJSON(t, hitl.ExecApproval("npm install chalk", "/work", map[string]string{"CI": "1"}))
	rich := richForm(t)
	ok := `{"env":"prod","replicas":3,"confirm":false,"name":"x"}`
	cases := []struct {
		name, form, data string
		code             perr.Code
		msgHas           string
	}{
		{"approve", string(exec), `{"approved":true}`, "", ""},
		{"reject with feedback", string(exec), `{"approved":false,"feedback":"use yarn"}`, "", ""},
		{"string true is not an approval", string(exec), `{"approved":"true"}`, hitl.CodeBadType, `field "approved" (boolean “Approve”) must be a JSON boolean`},
		{"number 1 is not an approval", string(exec), `{"approved":1}`, hitl.CodeBadType, "a number 1"},
		{"missing approved", string(exec), `{"feedback":"hm"}`, hitl.CodeMissingField, `required field "approved"`},
		{"null approved", string(exec), `{"approved":null}`, hitl.CodeMissingField, ""},
		{"allow_always as string", string(exec), `{"approved":true,"allow_always":"yes"}`, hitl.CodeBadType, "allow_always"},
		{"bad scope", string(exec), `{"approved":true,"scope":"world"}`, hitl.CodeBadOption, `does not offer "world"`},
		{"feedback as number", string(exec), `{"approved":false,"feedback":3}`, hitl.CodeBadType, "feedback"},
		{"not an object", string(exec), `true`, hitl.CodeBadInput, "JSON object"},
		{"array", string(exec), `[{"approved":true}]`, hitl.CodeBadInput, ""},
		{"invalid json", string(exec), `{"approved":tru`, hitl.CodeBadInput, ""},
		{"rich ok", string(rich), ok, "", ""},
		{"rich extra keys pass", string(rich), `{"env":"prod","replicas":3,"confirm":true,"name":"x","extra":[1]}`, "", ""},
		{"select not an option", string(rich), `{"env":"dev","replicas":3,"confirm":true,"name":"x"}`, hitl.CodeBadOption, `"staging", "prod"`},
		{"number as string", string(rich), `{"env":"prod","replicas":"3","confirm":true,"name":"x"}`, hitl.CodeBadType, "JSON number"},
		{"empty required text", string(rich), `{"env":"prod","replicas":3,"confirm":true,"name":"  "}`, hitl.CodeMissingField, "empty"},
		{"bad email", string(rich), `{"env":"prod","replicas":3,"confirm":true,"name":"x","notify":"Bob <b@x.io>"}`, hitl.CodeBadType, "email"},
		{"good email", string(rich), `{"env":"prod","replicas":3,"confirm":true,"name":"x","notify":"b@x.io"}`, "", ""},
		{"javascript url", string(rich), `{"env":"prod","replicas":3,"confirm":true,"name":"x","dashboard":"javascript:alert(1)"}`, hitl.CodeBadType, "http(s) URL"},
		{"good url", string(rich), `{"env":"prod","replicas":3,"confirm":true,"name":"x","dashboard":"https://x.io/d"}`, "", ""},
		{"reserved approved checked outside forms", string(rich), `{"env":"prod","replicas":3,"confirm":true,"name":"x","approved":"true"}`, hitl.CodeBadType, "approved"},
		{"plain suspend accepts anything", `{"command":"ls"}`, `"whatever"`, "", ""},
		{"null payload", ``, `{}`, "", ""},
		{"bad field type in form", `{"_form":{"title":"x","fields":[{"key":"a","type":"color"}]}}`, `{"a":"red"}`, hitl.CodeBadForm, "unknown type"},
		{"malformed form", `{"_form":{"fields":"nope"}}`, `{}`, hitl.CodeBadForm, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := hitl.Validate(json.RawMessage(c.form), json.RawMessage(c.data))
			if perr.CodeOf(err) != c.code {
				t.Fatalf("want code %q, got %v", c.code, err)
			}
			if c.msgHas != "" && !strings.Contains(err.Error(), c.msgHas) {
				t.Fatalf("error %q lacks %q", err, c.msgHas)
			}
			if err != nil && !strings.Contains(err.Error(), "(fix: ") {
				t.Fatalf("error without a fix: %v", err)
			}
		})
	}
}

func TestOperatorFormFromEventsValidates(t *testing.T) {
	// events.operatorForm writes the same shape; the string "true" must not
	// retry a parked run.
	form := `{"_form":{"title":"Run parked","fields":[{"key":"approved","type":"boolean","label":"Retry","required":true}]},"_source":"operator"}`
	if err := hitl.Validate(json.RawMessage(form), json.RawMessage(`{"approved":"true"}`)); perr.CodeOf(err) != hitl.CodeBadType {
		t.Fatal(err)
	}
}

func TestParseDecision(t *testing.T) {
	d, err := hitl.ParseDecision(json.RawMessage(`{"approved":true,"allow_always":true,"pattern":"npm install *","scope":"agent"}`))
	if err != nil || !d.Approved || !d.AllowAlways || d.Pattern != "npm install *" || d.Scope != hitl.ScopeAgent {
		t.Fatalf("%+v %v", d, err)
	}
	d, err = hitl.ParseDecision(json.RawMessage(`{}`))
	if err != nil || d.Approved || d.Scope != hitl.ScopeSession {
		t.Fatalf("empty decision: %+v %v", d, err)
	}
	for _, bad := range []string{`{"approved":"true"}`, `{"approved":"yes"}`, `{"approved":1}`, `{"scope":"all"}`, `"true"`, `{"timed_out":true,"approved":"true"}`} {
		if _, err := hitl.ParseDecision(json.RawMessage(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	// timed_out cannot be forged by a decider.
	d, _ = hitl.ParseDecision(json.RawMessage(`{"approved":false,"timed_out":true}`))
	if d.TimedOut {
		t.Fatal("timed_out taken from resume data")
	}
}

func TestDecisionFromResumeTimeout(t *testing.T) {
	to := perr.New(replay.CodeWaitTimeout, "", "nobody decided step %q before its timeout", "approve")
	d, err := hitl.DecisionFromResume(nil, to)
	if err != nil || d.Approved || !d.TimedOut || !strings.Contains(d.Feedback, "timed out") {
		t.Fatalf("%+v %v", d, err)
	}
	other := perr.New("X", "", "boom")
	if _, err := hitl.DecisionFromResume(nil, other); err != other {
		t.Fatalf("other errors pass through: %v", err)
	}
}

func TestRejectedResults(t *testing.T) {
	r := hitl.RejectedExecResult("rm -rf /tmp/x", "use trash instead")
	if r.ExitCode != -1 || r.Stderr != "Command rejected by user: rm -rf /tmp/x\nUser feedback: use trash instead" || r.Stdout != "" {
		t.Fatalf("%+v", r)
	}
	if r := hitl.RejectedExecResult("ls", ""); r.Stderr != "Command rejected by user: ls" {
		t.Fatalf("%q", r.Stderr)
	}
	tr := hitl.RejectedToolResult("write", "not that file")
	if !tr.Rejected || tr.Error != "Tool call rejected by user: write\nUser feedback: not that file" {
		t.Fatalf("%+v", tr)
	}
}

func TestBuildersAndSubjects(t *testing.T) {
	cases := []struct {
		p       hitl.Payload
		kind    hitl.Kind
		subject string
		boolean bool
	}{
		{hitl.ExecApproval("git push", "/w", nil), hitl.KindExec, "git push", true},
		{hitl.ToolApproval("web_search", json.RawMessage(`{"q":"x"}`)), hitl.KindTool, "web_search", true},
		{hitl.PathApproval("/etc/../etc/hosts", "read"), hitl.KindPath, "read:/etc/hosts", true},
	}
	for _, c := range cases {
		// Round-trip through JSON, as the page and channels see it.
		p, ok, err := hitl.ParsePayload(mustJSON(t, c.p))
		if !ok || err != nil {
			t.Fatal(ok, err)
		}
		k, s, ok := p.Subject()
		if !ok || k != c.kind || s != c.subject {
			t.Errorf("%s: subject %s %q", c.p.Source, k, s)
		}
		if p.Form.IsBooleanApproval() != c.boolean {
			t.Errorf("%s: boolean approval %v", c.p.Source, !c.boolean)
		}
	}
	ask, _, _ := hitl.ParsePayload(mustJSON(t, hitl.AskUser("Name?", nil)))
	if _, _, ok := ask.Subject(); ok || ask.Form.IsBooleanApproval() || ask.Source != hitl.SourceAskUser {
		t.Fatalf("ask_user: %+v", ask)
	}
	if err := hitl.Validate(mustJSON(t, hitl.AskUser("Name?", nil)), json.RawMessage(`{}`)); perr.CodeOf(err) != hitl.CodeMissingField {
		t.Fatal(err)
	}
}

func TestTokens(t *testing.T) {
	secret := []byte(strings.Repeat("k", 32))
	now := time.Unix(1_700_000_000, 0)
	tok, c, err := hitl.IssueToken(secret, "default", "run_1", "approve_exec_1", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	got, err := hitl.VerifyToken(secret, tok, "default", "run_1", "approve_exec_1", now.Add(time.Minute))
	if err != nil || got != c || hitl.TokenID(tok) != c.ID {
		t.Fatalf("%+v %v", got, err)
	}
	bad := func(name, tok, ns, run, step string, at time.Time, code perr.Code) {
		t.Helper()
		if _, err := hitl.VerifyToken(secret, tok, ns, run, step, at); perr.CodeOf(err) != code {
			t.Errorf("%s: want %s, got %v", name, code, err)
		}
	}
	bad("other run", tok, "default", "run_2", "approve_exec_1", now, hitl.CodeBadToken)
	bad("other step", tok, "default", "run_1", "approve_exec_2", now, hitl.CodeBadToken)
	bad("other namespace", tok, "prod", "run_1", "approve_exec_1", now, hitl.CodeBadToken)
	bad("expired", tok, "default", "run_1", "approve_exec_1", now.Add(2*time.Hour), hitl.CodeTokenExpired)
	other, _, _ := hitl.IssueToken([]byte(strings.Repeat("x", 32)), "default", "run_1", "approve_exec_1", time.Hour, now)
	bad("other secret", other, "default", "run_1", "approve_exec_1", now, hitl.CodeBadToken)
	// Re-bind the claims to another step and keep the old signature.
	parts := strings.Split(tok, ".")
	forged := parts[0] + "." + strings.ToUpper(parts[1][:1]) + parts[1][1:] + "." + parts[2]
	bad("tampered claims", forged, "default", "run_1", "approve_exec_1", now, hitl.CodeBadToken)
	for _, junk := range []string{"", "v1..", "v1.e30.", "v2." + parts[1] + "." + parts[2], tok + ".x", "../../etc/passwd"} {
		bad("junk "+junk, junk, "default", "run_1", "approve_exec_1", now, hitl.CodeBadToken)
	}
	if _, _, err := hitl.IssueToken([]byte("short"), "d", "r", "s", 0, now); perr.CodeOf(err) != hitl.CodeWeakSecret {
		t.Fatal(err)
	}
	if u := hitl.ApprovalURL("http://x/", "run 1", "a/b", "t+1"); u != "http://x/approve/run%201/a%2Fb?token=t%2B1" {
		t.Fatal(u)
	}
}

func FuzzValidate(f *testing.F) {
	exec := mustJSON(f, hitl.ExecApproval("ls", "/", nil))
	rich := richForm(f)
	for _, s := range []string{`{"approved":true}`, `{"approved":"true"}`, `{}`, `null`, `[1]`, `{"env":"prod","replicas":1e400}`, "{\"name\":\"\\u0000\"}"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, data string, useRich bool) {
		form := exec
		if useRich {
			form = rich
		}
		err := hitl.Validate(form, json.RawMessage(data))
		if err != nil && perr.CodeOf(err) == "" {
			t.Fatalf("uncoded error %v", err)
		}
		if err == nil && !useRich {
			// An accepted exec decision must parse, and approve only on JSON true.
			d, perr2 := hitl.ParseDecision(json.RawMessage(data))
			if perr2 != nil {
				t.Fatalf("validated but unparsable: %v", perr2)
			}
			var raw map[string]json.RawMessage
			_ = json.Unmarshal([]byte(data), &raw)
			if d.Approved && strings.TrimSpace(string(raw["approved"])) != "true" {
				t.Fatalf("approved from %s", raw["approved"])
			}
		}
	})
}

func FuzzVerifyToken(f *testing.F) {
	secret := []byte(strings.Repeat("k", 32))
	now := time.Unix(1_700_000_000, 0)
	tok, _, _ := hitl.IssueToken(secret, "default", "r", "s", time.Hour, now)
	f.Add(tok)
	f.Add("v1.e30.AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		// Anything accepted must be the one canonical spelling of a token
		// signed with our secret: same claims re-encoded and re-signed.
		if _, err := hitl.VerifyToken(secret, s, "default", "r", "s", now); err == nil {
			parts := strings.Split(s, ".")
			body, _ := base64.RawURLEncoding.DecodeString(parts[1])
			mac := hmac.New(sha256.New, secret)
			mac.Write([]byte("polos-approval\x00" + parts[0] + "." + parts[1]))
			if parts[0] != "v1" || base64.RawURLEncoding.EncodeToString(body) != parts[1] || base64.RawURLEncoding.EncodeToString(mac.Sum(nil)) != parts[2] {
				t.Fatalf("accepted a non-canonical or foreign token: %q", s)
			}
		}
	})
}
