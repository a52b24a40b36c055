package hitl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/mail"
	"net/url"
	"strings"

	"github.com/polos-run/polos/perr"
)

// Error codes of form validation and decisions.
const (
	CodeMissingField perr.Code = "HITL_MISSING_FIELD" // a required field is absent, null or empty
	CodeBadType      perr.Code = "HITL_BAD_TYPE"      // a field has the wrong JSON type or format
	CodeBadOption    perr.Code = "HITL_BAD_OPTION"    // a select value is not one of the options
	CodeBadInput     perr.Code = "HITL_BAD_INPUT"     // the decision is not a JSON object, or too large
	CodeBadForm      perr.Code = "HITL_BAD_FORM"      // the suspend payload's _form is malformed
)

// MaxDecisionBytes bounds the resume data of one decision.
const MaxDecisionBytes = 256 << 10

// Validate checks resume data against the form of a suspend payload. Its
// signature fits client.Decision.Validate, so a refused decision is never
// appended and the run stays waiting.
//
// Rules: data must be a JSON object. Every required field must be present
// and not null (a required text field must not be empty; a default never
// stands in for an answer). Present fields must have their type's JSON
// type: boolean a JSON boolean (the string "true" is refused, so it can
// never count as an approval), number a finite JSON number, the others a
// JSON string; select must be one of its options, email one bare address,
// url an absolute http(s) URL. The reserved keys approved and allow_always
// must be JSON booleans and feedback, pattern and scope strings wherever
// they appear, even when the form has no such field. Keys the form does not
// name are otherwise accepted and passed to the workflow untouched. A
// payload without _form (a plain Suspend) accepts any JSON.
func Validate(form json.RawMessage, data json.RawMessage) error {
	p, ok, err := ParsePayload(form)
	if err != nil {
		return err
	}
	if len(data) > MaxDecisionBytes {
		return perr.New(CodeBadInput, "send a shorter answer", "the decision is %d bytes, at most %d are accepted", len(data), MaxDecisionBytes)
	}
	if !ok {
		return nil
	}
	obj, err := decodeObject(data)
	if err != nil {
		return err
	}
	for _, f := range p.Form.Fields {
		v, present := obj[f.Key]
		if !present || isNull(v) {
			if f.Required {
				return perr.New(CodeMissingField, fmt.Sprintf("send %q as a JSON %s", f.Key, jsonTypeOf(f.Type)),
					"required field %q (%s) is missing", f.Key, label(f))
			}
			continue
		}
		if err := checkField(f, v); err != nil {
			return err
		}
	}
	return checkReserved(obj, p.Form)
}

// decodeObject parses data as one JSON object.
func decodeObject(data json.RawMessage) (map[string]json.RawMessage, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		data = json.RawMessage("{}")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return nil, perr.New(CodeBadInput, `send a JSON object, e.g. {"approved": true}`,
			"the decision must be a JSON object, got %s", describe(data))
	}
	return obj, nil
}

func checkReserved(obj map[string]json.RawMessage, f Form) error {
	for _, k := range []string{KeyApproved, KeyAllowAlways} {
		if _, inForm := f.Field(k); inForm {
			continue
		}
		if v, ok := obj[k]; ok && !isNull(v) {
			if err := checkField(Field{Key: k, Type: FieldBoolean}, v); err != nil {
				return err
			}
		}
	}
	for _, k := range []string{KeyFeedback, KeyPattern, KeyScope} {
		if _, inForm := f.Field(k); inForm {
			continue
		}
		if v, ok := obj[k]; ok && !isNull(v) {
			if err := checkField(Field{Key: k, Type: FieldText}, v); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkField(f Field, v json.RawMessage) error {
	bad := func(what string) error {
		return perr.New(CodeBadType, fmt.Sprintf("send %q as %s", f.Key, what),
			"field %q (%s) must be %s, got %s", f.Key, label(f), what, describe(v))
	}
	switch f.Type {
	case FieldBoolean:
		var b bool
		if json.Unmarshal(v, &b) != nil {
			return bad("a JSON boolean (true or false, not a string)")
		}
	case FieldNumber:
		var n float64
		if json.Unmarshal(v, &n) != nil || math.IsInf(n, 0) || math.IsNaN(n) {
			return bad("a JSON number")
		}
	case FieldText, FieldTextarea, FieldSelect, FieldEmail, FieldURL:
		var s string
		if json.Unmarshal(v, &s) != nil {
			return bad("a JSON string")
		}
		if f.Required && strings.TrimSpace(s) == "" {
			return perr.New(CodeMissingField, fmt.Sprintf("fill in %q", f.Key), "required field %q (%s) is empty", f.Key, label(f))
		}
		return checkStringFormat(f, s, bad)
	default:
		return perr.New(CodeBadForm, "use one of boolean, select, textarea, number, text, email, url",
			"field %q of the form has unknown type %q", f.Key, f.Type)
	}
	return nil
}

func checkStringFormat(f Field, s string, bad func(string) error) error {
	switch f.Type {
	case FieldSelect:
		var vals []string
		for _, o := range f.Options {
			if o.Value == s {
				return nil
			}
			vals = append(vals, fmt.Sprintf("%q", o.Value))
		}
		return perr.New(CodeBadOption, "choose one of "+strings.Join(vals, ", "),
			"field %q (%s) does not offer %q", f.Key, label(f), s)
	case FieldEmail:
		if s == "" {
			return nil
		}
		a, err := mail.ParseAddress(s)
		if err != nil || a.Address != s {
			return bad("one email address like name@example.com")
		}
	case FieldURL:
		if s == "" {
			return nil
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("an absolute http(s) URL")
		}
	}
	return nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func label(f Field) string {
	if f.Label != "" {
		return string(f.Type) + " \u201c" + f.Label + "\u201d"
	}
	return string(f.Type)
}

func jsonTypeOf(t FieldType) string {
	switch t {
	case FieldBoolean:
		return "boolean"
	case FieldNumber:
		return "number"
	}
	return "string"
}

// describe names the JSON type and a short excerpt of a value.
func describe(v json.RawMessage) string {
	t := bytes.TrimSpace(v)
	kind := "invalid JSON"
	if json.Valid(t) && len(t) > 0 {
		switch t[0] {
		case '"':
			kind = "a string"
		case '{':
			kind = "an object"
		case '[':
			kind = "an array"
		case 't', 'f':
			kind = "a boolean"
		case 'n':
			kind = "null"
		default:
			kind = "a number"
		}
	}
	ex := string(t)
	if len(ex) > 40 {
		ex = ex[:40] + "..."
	}
	return kind + " " + ex
}

func badForm(err error) error {
	return perr.Wrap(err, CodeBadForm, "build forms with hitl.ExecApproval, ToolApproval, PathApproval or AskUser",
		"the suspend payload's _form is malformed")
}
