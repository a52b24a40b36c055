package web

import (
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"sort"
	"strings"

	"github.com/polos-run/polos/hitl"
	"github.com/polos-run/polos/internal/textsafe"
	"github.com/polos-run/polos/notify"
	"github.com/polos-run/polos/perr"
)

// page is everything the template may show.
type page struct {
	Kind      string // form | decided | done | invalid | gone | error
	RunID     string
	StepKey   string
	Token     string
	Payload   hitl.Payload
	TimeoutAt string
	Outcome   *notify.Outcome
	Status    string
	Error     error
	Values    map[string]string // echoed form values after a refused post
}

// ContextItem is one line of what is being decided.
type ContextItem struct{ Key, Value string }

// ContextItems lists the form's context, keys sorted; strings verbatim,
// everything else as indented JSON.
func (p page) ContextItems() []ContextItem {
	keys := make([]string, 0, len(p.Payload.Form.Context))
	for k := range p.Payload.Form.Context {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []ContextItem
	for _, k := range keys {
		v := p.Payload.Form.Context[k]
		s, ok := v.(string)
		if !ok {
			b, _ := json.MarshalIndent(v, "", "  ")
			s = string(b)
		}
		out = append(out, ContextItem{k, s})
	}
	return out
}

// ApprovalButtons: the form is decided with Approve / Reject buttons.
func (p page) ApprovalButtons() bool {
	f, ok := p.Payload.Form.Field(hitl.KeyApproved)
	return ok && f.Type == hitl.FieldBoolean
}

// InputFields are the fields rendered as inputs (approved is the buttons).
func (p page) InputFields() []hitl.Field {
	var out []hitl.Field
	for _, f := range p.Payload.Form.Fields {
		if f.Key == hitl.KeyApproved && p.ApprovalButtons() {
			continue
		}
		out = append(out, f)
	}
	return out
}

// Value is the pre-filled value of a field: what was posted, else its default.
func (p page) Value(f hitl.Field) string {
	if v, ok := p.Values[f.Key]; ok {
		return v
	}
	var s string
	if json.Unmarshal(f.Default, &s) == nil {
		return s
	}
	if len(f.Default) > 0 && string(f.Default) != "null" {
		return string(f.Default)
	}
	return ""
}

// Checked reports whether a boolean field starts checked.
func (p page) Checked(f hitl.Field) bool {
	if v, ok := p.Values[f.Key]; ok {
		return v == "true" || v == "on"
	}
	return string(f.Default) == "true"
}

// ErrorCode is the coded error's code, for the page.
func (p page) ErrorCode() string { return string(perr.CodeOf(p.Error)) }

// ErrorText is a person-readable message.
func (p page) ErrorText() string {
	var e *perr.Error
	if p.Error == nil {
		return ""
	}
	if errors.As(p.Error, &e) {
		s := e.Msg
		if e.Fix != "" {
			s += " (" + e.Fix + ")"
		}
		return s
	}
	return p.Error.Error()
}

func (h *Handler) render(w http.ResponseWriter, code int, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := pageTmpl.Execute(w, p); err != nil {
		h.cfg.Logf("approval page: %v", err)
	}
}

// pageFuncs make agent-chosen text visible as text (textsafe): control,
// bidi and invisible characters are shown escaped (\u{202e}), on top of
// html/template's HTML escaping. showLines keeps line breaks (for <pre>
// blocks and descriptions). Values the person submits (input values,
// option values, hidden fields) are not escaped: they must post back as
// they were.
var pageFuncs = template.FuncMap{
	"show":      textsafe.Escape,
	"showLines": func(s string) string { return strings.Join(textsafe.EscapeLines(s), "\n") },
}

var pageTmpl = template.Must(template.New("page").Funcs(pageFuncs).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{{if eq .Kind "form"}}{{show .Payload.Form.Title}}{{else}}Polos approval{{end}}</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}
#description{white-space:pre-line}pre{background:#f4f4f4;padding:.6rem;border-radius:4px;white-space:pre-wrap;word-break:break-all}
label{display:block;margin:.8rem 0 .2rem;font-weight:600}.desc{color:#555;font-size:.9em}
input[type=text],input[type=email],input[type=url],input[type=number],textarea,select{width:100%;box-sizing:border-box;padding:.4rem}
textarea{min-height:5rem}.buttons{margin-top:1.2rem}button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.6rem}
.approve{background:#1f7a35;color:#fff;border:0}.reject{background:#b3261e;color:#fff;border:0}
.error{background:#fdecea;border:1px solid #b3261e;padding:.6rem;border-radius:4px}.outcome{font-size:1.2em}
</style></head><body>
{{- if eq .Kind "invalid"}}
<h1 id="status">Invalid or expired link</h1>
<p id="detail">This approval link is invalid or has expired. Ask for a new one.</p>
{{- else if eq .Kind "gone"}}
<h1 id="status">Nothing to decide</h1>
<p id="detail">This step is not waiting for a decision (the run is {{show .Status}}).</p>
{{- else if eq .Kind "decided"}}
<h1 id="status">Already decided</h1>
<p id="detail" class="outcome">{{$ab := .ApprovalButtons}}{{with .Outcome}}{{if .TimedOut}}Timed out at {{.DecidedAt.Format "2006-01-02 15:04:05 MST"}}: treated as rejected.{{else}}Already {{if not $ab}}answered{{else if .Approved}}approved{{else}}rejected{{end}} by {{show .DecidedBy}} at {{.DecidedAt.Format "2006-01-02 15:04:05 MST"}}.{{end}}{{end}}</p>
{{- else if eq .Kind "done"}}
<h1 id="status">{{if not .ApprovalButtons}}Answer sent{{else}}{{with .Outcome}}{{if .Approved}}Approved{{else}}Rejected{{end}}{{end}}{{end}}</h1>
<p id="detail">Thank you: your decision was recorded and the run continues.{{with .Outcome}}{{if .Feedback}} Feedback sent to the agent: <q>{{show .Feedback}}</q>{{end}}{{end}}</p>
{{- else if eq .Kind "error"}}
<h1 id="status">Could not record the decision</h1>
<p id="detail" class="error">{{show .ErrorText}}</p>
{{- else}}
<h1 id="title">{{show .Payload.Form.Title}}</h1>
{{with .Payload.Form.Description}}<p id="description">{{showLines .}}</p>{{end}}
{{range .ContextItems}}<div class="ctx"><strong>{{show .Key}}</strong><pre id="ctx-{{.Key}}">{{showLines .Value}}</pre></div>{{end}}
{{with .TimeoutAt}}<p class="desc">Times out at {{.}} (then treated as rejected).</p>{{end}}
{{if .Error}}<p id="error" class="error" data-code="{{.ErrorCode}}">{{show .ErrorText}}</p>{{end}}
<form method="post" id="decide">
<input type="hidden" name="token" value="{{.Token}}">
{{- $p := .}}
{{range .InputFields}}
<div class="field">
{{- if eq .Type "boolean"}}
<label><input type="checkbox" id="f-{{.Key}}" name="{{.Key}}" value="true"{{if $p.Checked .}} checked{{end}}> {{show (or .Label .Key)}}</label>
{{- else}}
<label for="f-{{.Key}}">{{show (or .Label .Key)}}{{if .Required}} *{{end}}</label>
{{- if eq .Type "textarea"}}
<textarea id="f-{{.Key}}" name="{{.Key}}"{{if .Required}} required{{end}}>{{$p.Value .}}</textarea>
{{- else if eq .Type "select"}}
<select id="f-{{.Key}}" name="{{.Key}}"{{if .Required}} required{{end}}>{{if not .Required}}<option value=""></option>{{end}}{{$v := $p.Value .}}{{range .Options}}<option value="{{.Value}}"{{if eq .Value $v}} selected{{end}}>{{show (or .Label .Value)}}</option>{{end}}</select>
{{- else}}
<input type="{{if eq .Type "number"}}number" step="any{{else if eq .Type "email"}}email{{else if eq .Type "url"}}url{{else}}text{{end}}" id="f-{{.Key}}" name="{{.Key}}" value="{{$p.Value .}}"{{if .Required}} required{{end}}>
{{- end}}
{{- end}}
{{with .Description}}<div class="desc">{{show .}}</div>{{end}}
</div>
{{end}}
<div class="buttons">
{{if .ApprovalButtons}}<button type="submit" id="approve" class="approve" name="approved" value="true">Approve</button><button type="submit" id="reject" class="reject" name="approved" value="false" formnovalidate>Reject</button>
{{else}}<button type="submit" id="submit">Send</button>{{end}}
</div>
</form>
<p class="desc">Run {{show .RunID}} · step {{show .StepKey}}</p>
{{- end}}
</body></html>
`))
