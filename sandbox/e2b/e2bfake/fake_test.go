package e2bfake

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

func newFake(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("answer %d %q is not a JSON object: %v", a.status, a.body, err)
	}
	return m
}

func do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, body}
}

func api(t *testing.T, s *Server, method, path, key, body string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set(wire.HeaderAPIKey, key)
	}
	req.Header.Set("Content-Type", wire.ContentTypeJSON)
	return do(t, req)
}

// created is a sandbox made through the API, with its raw 201 body.
type created struct {
	id, token string
	raw       map[string]any
}

func create(t *testing.T, s *Server) created {
	t.Helper()
	a := api(t, s, "POST", "/sandboxes", s.APIKey(), `{"templateID":"base","timeout":300,"secure":true,"envVars":{"GLOBAL":"g"},"metadata":{}}`)
	if a.status != http.StatusCreated {
		t.Fatalf("create: %d %s", a.status, a.body)
	}
	m := a.json(t)
	return created{id: m["sandboxID"].(string), token: m["envdAccessToken"].(string), raw: m}
}

func envd(t *testing.T, s *Server, c created, method, path, contentType string, body []byte) answer {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
	req.Header.Set(wire.HeaderSandboxID, c.id)
	req.Header.Set(wire.HeaderSandboxPort, "49983")
	if c.token != "" {
		req.Header.Set(wire.HeaderAccessToken, c.token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(t, req)
}

func TestControlPlaneWire(t *testing.T) {
	s := newFake(t, Options{})
	c := create(t, s)
	keys := make([]string, 0, len(c.raw))
	for k := range c.raw {
		keys = append(keys, k)
	}
	wantKeys := []string{"clientID", "domain", "envdAccessToken", "envdVersion", "sandboxID", "templateID"}
	if strings.Join(sorted(keys), ",") != strings.Join(wantKeys, ",") {
		t.Errorf("201 keys %v, want %v", keys, wantKeys)
	}
	if c.raw["domain"] != nil || c.raw["clientID"] != "6532622b" || c.raw["envdVersion"] != "0.6.13" || !regexp.MustCompile(`^[a-z0-9]{20}$`).MatchString(c.id) {
		t.Errorf("201 body %v", c.raw)
	}

	if a := api(t, s, "POST", "/sandboxes", "e2b_wrong", `{"templateID":"base"}`); a.status != 401 || a.json(t)["code"] != 401.0 {
		t.Errorf("bad key: %d %s", a.status, a.body)
	}
	if a := api(t, s, "POST", "/sandboxes", s.APIKey(), `{"templateID":"base","timeout":0}`); a.status != 400 || a.json(t)["message"] != "Timeout must be greater than 0" {
		t.Errorf("timeout 0: %d %s", a.status, a.body)
	}
	if a := api(t, s, "POST", "/sandboxes", s.APIKey(), `{"templateID":"base","timeout":3601}`); a.status != 400 || a.json(t)["message"] != "Timeout cannot be greater than 1 hours" {
		t.Errorf("timeout over the max: %d %s", a.status, a.body)
	}
	s.RejectCreates(1)
	if a := api(t, s, "POST", "/sandboxes", s.APIKey(), `{"templateID":"base"}`); a.status != 429 || a.json(t)["code"] != 429.0 {
		t.Errorf("429 knob: %d %s", a.status, a.body)
	}

	a := api(t, s, "GET", "/sandboxes/"+c.id, s.APIKey(), "")
	if a.status != 200 || a.json(t)["envdAccessToken"] != c.token || a.json(t)["state"] != "running" {
		t.Errorf("GET: %d %s", a.status, a.body)
	}
	if a := api(t, s, "POST", "/sandboxes/"+c.id+"/timeout", s.APIKey(), `{"timeout":600}`); a.status != 204 {
		t.Errorf("set timeout: %d %s", a.status, a.body)
	}
	if a := api(t, s, "DELETE", "/sandboxes/"+c.id, s.APIKey(), ""); a.status != 204 || len(a.body) != 0 {
		t.Errorf("DELETE: %d %q", a.status, a.body)
	}
	want := map[string]any{"code": 404.0, "message": `Sandbox "` + c.id + `" doesn't exist or you don't have access to it`}
	for _, m := range []string{"DELETE", "GET"} {
		if a := api(t, s, m, "/sandboxes/"+c.id, s.APIKey(), ""); a.status != 404 || !reflect.DeepEqual(a.json(t), want) {
			t.Errorf("%s of a gone sandbox: %d %s", m, a.status, a.body)
		}
	}
	if a := api(t, s, "GET", "/sandboxes/Not-An-ID", s.APIKey(), ""); a.status != 400 {
		t.Errorf("malformed ID: %d %s", a.status, a.body)
	}
}

func TestEnvdRoutingAndAuth(t *testing.T) {
	s := newFake(t, Options{})
	c := create(t, s)
	gone := created{id: "abcdefghij0123456789"}
	a := envd(t, s, gone, "GET", "/health", "", nil)
	want := map[string]any{"sandboxId": gone.id, "message": "The sandbox was not found", "code": 502.0}
	if a.status != 502 || !reflect.DeepEqual(a.json(t), want) {
		t.Errorf("unknown sandbox: %d %s", a.status, a.body)
	}
	if a := envd(t, s, created{id: c.id}, "GET", "/health", "", nil); a.status != 204 {
		t.Errorf("health without token: %d", a.status)
	}
	req, _ := http.NewRequest("GET", s.URL+"/health", nil)
	req.Host = "49983-" + c.id + ".e2b.app"
	if a := do(t, req); a.status != 204 {
		t.Errorf("routing by Host: %d %s", a.status, a.body)
	}
	req, _ = http.NewRequest("GET", s.URL+"/health", nil)
	req.Header.Set(wire.HeaderSandboxID, c.id)
	if a := do(t, req); a.status != 400 {
		t.Errorf("only one routing header: %d", a.status)
	}
	noToken := created{id: c.id}
	if a := envd(t, s, noToken, "POST", wire.PathStart, wire.ContentTypeConnectJSON, startBody("true")); a.status != 401 || a.json(t)["code"] != 401.0 {
		t.Errorf("Start without token: %d %s", a.status, a.body)
	}
	if a := envd(t, s, noToken, "GET", "/files?path=x", "", nil); a.status != 401 || a.json(t)["message"] != msgMissingSignature {
		t.Errorf("/files without token: %d %s", a.status, a.body)
	}
	if a := envd(t, s, c, "POST", wire.PathStart, wire.ContentTypeJSON, startBody("true")); a.status != 415 || len(a.body) != 0 {
		t.Errorf("Start with application/json: %d %q", a.status, a.body)
	}
	if a := envd(t, s, c, "POST", wire.PathListDir, "text/plain", []byte(`{}`)); a.status != 415 {
		t.Errorf("ListDir with text/plain: %d", a.status)
	}
	bob := envdAuth(t, s, c, "bob")
	if bob.status != 401 || bob.json(t)["code"] != "unauthenticated" {
		t.Errorf("unknown user: %d %s", bob.status, bob.body)
	}
}

func envdAuth(t *testing.T, s *Server, c created, user string) answer {
	req, _ := http.NewRequest("POST", s.URL+wire.PathListDir, strings.NewReader(`{"path":"/"}`))
	req.Header.Set(wire.HeaderSandboxID, c.id)
	req.Header.Set(wire.HeaderSandboxPort, "49983")
	req.Header.Set(wire.HeaderAccessToken, c.token)
	req.Header.Set("Content-Type", wire.ContentTypeJSON)
	req.SetBasicAuth(user, "")
	return do(t, req)
}

func startBody(command string, cwd ...string) []byte {
	no := false
	req := wire.StartRequest{Process: wire.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", command}}, Stdin: &no}
	if len(cwd) > 0 {
		req.Process.Cwd = cwd[0]
	}
	b, _ := json.Marshal(req)
	return wire.AppendEnvelope(nil, wire.FlagMessage, b)
}

type envelope struct {
	flags byte
	msg   map[string]any
}

func startStream(t *testing.T, s *Server, c created, command string, timeoutMs string, cwd ...string) []envelope {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL+wire.PathStart, bytes.NewReader(startBody(command, cwd...)))
	req.Header.Set(wire.HeaderSandboxID, c.id)
	req.Header.Set(wire.HeaderSandboxPort, "49983")
	req.Header.Set(wire.HeaderAccessToken, c.token)
	req.Header.Set("Content-Type", wire.ContentTypeConnectJSON)
	if timeoutMs != "" {
		req.Header.Set(wire.HeaderConnectTimeout, timeoutMs)
	}
	a := do(t, req)
	if a.status != 200 || a.header.Get("Content-Type") != wire.ContentTypeConnectJSON {
		t.Fatalf("Start: %d %v %q", a.status, a.header, a.body)
	}
	var out []envelope
	r := bytes.NewReader(a.body)
	for {
		flags, p, err := wire.ReadEnvelope(r, wire.MaxEnvelopeBytes)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatalf("envelope %q: %v", p, err)
		}
		out = append(out, envelope{flags, m})
	}
}

func event(e envelope, kind string) map[string]any {
	ev, _ := e.msg["event"].(map[string]any)
	m, _ := ev[kind].(map[string]any)
	return m
}

func TestStartWire(t *testing.T) {
	s := newFake(t, Options{})
	c := create(t, s)

	env := startStream(t, s, c, "echo hello; echo oops >&2; exit 3", "")
	if len(env) < 5 || event(env[0], "start")["pid"] == nil {
		t.Fatalf("stream %v", env)
	}
	var stdout, stderr string
	for _, e := range env[1 : len(env)-2] {
		d := event(e, "data")
		if s, ok := d["stdout"].(string); ok {
			stdout += s
		}
		if s, ok := d["stderr"].(string); ok {
			stderr += s
		}
	}
	if stdout != "aGVsbG8K" || stderr != "b29wcwo=" {
		t.Errorf("data events: stdout %q stderr %q", stdout, stderr)
	}
	wantEnd := map[string]any{"exitCode": 3.0, "exited": true, "status": "exit status 3", "error": "exit status 3"}
	if got := event(env[len(env)-2], "end"); !reflect.DeepEqual(got, wantEnd) {
		t.Errorf("end %v, want %v", got, wantEnd)
	}
	if last := env[len(env)-1]; last.flags != wire.FlagEndStream || len(last.msg) != 0 {
		t.Errorf("last envelope %x %v, want 0x02 {}", last.flags, last.msg)
	}

	env = startStream(t, s, c, "true", "")
	if got := event(env[len(env)-2], "end"); !reflect.DeepEqual(got, map[string]any{"exited": true, "status": "exit status 0"}) {
		t.Errorf("exit 0 end %v", got)
	}
	env = startStream(t, s, c, "kill -9 $$", "")
	if got := event(env[len(env)-2], "end"); !reflect.DeepEqual(got, map[string]any{"exitCode": -1.0, "status": "signal: killed", "error": "signal: killed"}) {
		t.Errorf("SIGKILL end %v", got)
	}

	env = startStream(t, s, c, "sleep 5", "300")
	last := env[len(env)-1]
	wantErr := map[string]any{"error": map[string]any{"code": "deadline_exceeded", "message": "context deadline exceeded"}}
	if len(env) != 2 || last.flags != wire.FlagEndStream || !reflect.DeepEqual(last.msg, wantErr) {
		t.Errorf("deadline stream %v, want start then 0x02 deadline_exceeded and no end", env)
	}

	env = startStream(t, s, c, "true", "", "/nonexistent")
	wantErr = map[string]any{"error": map[string]any{"code": "invalid_argument", "message": "cwd '/nonexistent' does not exist"}}
	if len(env) != 1 || env[0].flags != wire.FlagEndStream || !reflect.DeepEqual(env[0].msg, wantErr) {
		t.Errorf("bad cwd stream %v", env)
	}

	env = startStream(t, s, c, "head -c 100000 /dev/zero", "")
	total := 0
	for _, e := range env {
		if d := event(e, "data"); d != nil {
			n := len(d["stdout"].(string)) / 4 * 3
			if n > chunkSize+2 {
				t.Errorf("data event of %d bytes, over 32 KiB", n)
			}
			total += n
		}
	}
	if total < 100000 || total > 100000+3*len(env) {
		t.Errorf("100000 bytes came as about %d", total)
	}

	env = startStream(t, s, c, `printf '%s|%s|%s' "$GLOBAL" "$HOME" "$(pwd)"`, "")
	if got := event(env[1], "data")["stdout"]; got != b64("g|/home/user|/home/user") && s.Namespaces() {
		t.Errorf("environment and cwd: %v", got)
	}

	s.TruncateStreams(1)
	env = startStream(t, s, c, "true", "")
	if env[len(env)-1].flags == wire.FlagEndStream {
		t.Errorf("truncated stream still ends with 0x02: %v", env)
	}
}

func b64(s string) string {
	b, _ := json.Marshal([]byte(s))
	return strings.Trim(string(b), `"`)
}

func TestSendSignal(t *testing.T) {
	s := newFake(t, Options{})
	c := create(t, s)
	a := envd(t, s, c, "POST", wire.PathSendSignal, wire.ContentTypeJSON, []byte(`{"process":{"pid":4242424},"signal":"SIGNAL_SIGKILL"}`))
	want := map[string]any{"code": "not_found", "message": "process with pid 4242424 not found"}
	if a.status != 404 || !reflect.DeepEqual(a.json(t), want) {
		t.Errorf("unknown pid: %d %s", a.status, a.body)
	}
	a = envd(t, s, c, "POST", wire.PathSendSignal, wire.ContentTypeJSON, []byte(`{"process":{"pid":1},"signal":"SIGNAL_SIGHUP"}`))
	if a.status != 501 || a.json(t)["code"] != "unimplemented" {
		t.Errorf("unsupported signal: %d %s", a.status, a.body)
	}
}

func TestFilesWire(t *testing.T) {
	s := newFake(t, Options{})
	c := create(t, s)
	dir, _ := s.SandboxDir(c.id)

	a := envd(t, s, c, "POST", "/files?path=sub/a.txt", wire.ContentTypeOctetStream, []byte("hello"))
	if a.status != 200 || string(a.body) != `[{"name":"a.txt","path":"/home/user/sub/a.txt","type":"file"}]` {
		t.Errorf("octet-stream upload: %d %s", a.status, a.body)
	}
	if a := envd(t, s, c, "GET", "/files?path=/home/user/sub/a.txt", "", nil); a.status != 200 || string(a.body) != "hello" {
		t.Errorf("download: %d %q", a.status, a.body)
	}
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	fw, _ := mw.CreateFormFile("file", "/home/user/deep/er/b.txt")
	fw.Write([]byte("multi"))
	other, _ := mw.CreateFormFile("other", "/home/user/ignored.txt")
	other.Write([]byte("x"))
	mw.Close()
	if a := envd(t, s, c, "POST", "/files", mw.FormDataContentType(), mp.Bytes()); a.status != 200 || !strings.Contains(string(a.body), `"path":"/home/user/deep/er/b.txt"`) {
		t.Errorf("multipart upload with the path in the file name: %d %s", a.status, a.body)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "home/user/deep/er/b.txt")); string(got) != "multi" {
		t.Errorf("multipart content %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "home/user/ignored.txt")); err == nil {
		t.Error("a part with another field name was written")
	}
	if a := envd(t, s, c, "POST", "/files", wire.ContentTypeOctetStream, []byte("x")); a.status != 400 || a.json(t)["message"] != "path query parameter is required for raw body upload" {
		t.Errorf("octet-stream without path: %d %s", a.status, a.body)
	}
	if a := envd(t, s, c, "POST", "/files?path=x", "text/plain", []byte("x")); a.status != 400 || !strings.Contains(a.json(t)["message"].(string), "unsupported content type") {
		t.Errorf("text/plain upload: %d %s", a.status, a.body)
	}
	if a := envd(t, s, c, "GET", "/files?path=/home/user/nope", "", nil); a.status != 404 || a.json(t)["message"] != "path '/home/user/nope' does not exist" {
		t.Errorf("missing file: %d %s", a.status, a.body)
	}
	if a := envd(t, s, c, "GET", "/files?path=sub", "", nil); a.status != 400 || a.json(t)["message"] != "path '/home/user/sub' is a directory" {
		t.Errorf("directory: %d %s", a.status, a.body)
	}

	// ".." and absolute symlinks stay inside the sandbox directory.
	if a := envd(t, s, c, "POST", "/files?path=../../../../../../../../tmp/escaped", wire.ContentTypeOctetStream, []byte("in")); a.status != 200 {
		t.Fatalf("upload with ..: %d %s", a.status, a.body)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "tmp/escaped")); string(got) != "in" {
		t.Errorf("upload with .. landed elsewhere (%q in the sandbox's /tmp)", got)
	}
	if a := envd(t, s, c, "GET", "/files?path=../../../../etc/passwd", "", nil); a.status != 404 {
		t.Errorf("download of ../../../../etc/passwd: %d %.40q (the host's file?)", a.status, a.body)
	}
	os.MkdirAll(filepath.Join(dir, "data"), 0o755)
	os.WriteFile(filepath.Join(dir, "data/secret"), []byte("sandbox data"), 0o644)
	os.Symlink("/data/secret", filepath.Join(dir, "home/user/abs"))
	os.Symlink("../../../../../../etc/passwd", filepath.Join(dir, "home/user/rel"))
	os.Symlink("/data/new", filepath.Join(dir, "home/user/dangling"))
	if a := envd(t, s, c, "GET", "/files?path=abs", "", nil); a.status != 200 || string(a.body) != "sandbox data" {
		t.Errorf("absolute symlink resolved against the sandbox root: %d %q", a.status, a.body)
	}
	if a := envd(t, s, c, "GET", "/files?path=rel", "", nil); a.status != 404 {
		t.Errorf("relative symlink climbing out: %d %.40q", a.status, a.body)
	}
	if a := envd(t, s, c, "POST", "/files?path=dangling", wire.ContentTypeOctetStream, []byte("via link")); a.status != 200 {
		t.Errorf("upload through a dangling symlink: %d %s", a.status, a.body)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "data/new")); string(got) != "via link" {
		t.Errorf("upload through a dangling symlink wrote %q to the sandbox's /data/new", got)
	}
}

func TestFilesOldEnvd(t *testing.T) {
	s := newFake(t, Options{EnvdVersion: "0.5.0"})
	c := create(t, s)
	if a := envd(t, s, c, "POST", "/files?path=a", wire.ContentTypeOctetStream, []byte("x")); a.status != 400 {
		t.Errorf("octet-stream on envd 0.5.0: %d %s", a.status, a.body)
	}
	s = newFake(t, Options{EnvdVersion: "0.3.0"})
	c = create(t, s)
	if a := envd(t, s, c, "GET", "/files?path=a", "", nil); a.status != 401 {
		t.Errorf("envd 0.3.0 without username: %d %s", a.status, a.body)
	}
	if a := envdAuth(t, s, c, "user"); a.status != 200 {
		t.Errorf("envd 0.3.0 with user: %d %s", a.status, a.body)
	}
}

func TestListDirWire(t *testing.T) {
	s := newFake(t, Options{})
	c := create(t, s)
	dir, _ := s.SandboxDir(c.id)
	os.MkdirAll(filepath.Join(dir, "home/user/a/b/c"), 0o755)
	os.WriteFile(filepath.Join(dir, "home/user/a/f.txt"), []byte("hello world"), 0o644)
	os.Symlink("/etc", filepath.Join(dir, "home/user/a/link"))

	list := func(body string) answer {
		return envd(t, s, c, "POST", wire.PathListDir, wire.ContentTypeJSON, []byte(body))
	}
	a := list(`{"path":"/home/user/a"}`)
	var resp struct {
		Entries []map[string]any `json:"entries"`
	}
	json.Unmarshal(a.body, &resp)
	got := map[string]any{}
	for _, e := range resp.Entries {
		got[e["path"].(string)] = e["type"]
		if e["name"] == "f.txt" && (e["size"] != "11" || e["mode"] != 420.0 || e["permissions"] != "-rw-r--r--") {
			t.Errorf("file entry %v", e)
		}
	}
	want := map[string]any{"/home/user/a/b": "FILE_TYPE_DIRECTORY", "/home/user/a/f.txt": "FILE_TYPE_FILE", "/home/user/a/link": "FILE_TYPE_SYMLINK"}
	if a.status != 200 || !reflect.DeepEqual(got, want) {
		t.Errorf("depth 0 (= 1): %d %v", a.status, got)
	}
	a = list(`{"path":"a","depth":3}`)
	if !strings.Contains(string(a.body), `"/home/user/a/b/c"`) {
		t.Errorf("depth 3 misses a/b/c: %s", a.body)
	}
	if a := list(`{"path":"missing"}`); a.status != 404 || a.json(t)["code"] != "not_found" {
		t.Errorf("missing dir: %d %s", a.status, a.body)
	}
	if a := list(`{"path":"a/f.txt"}`); a.status != 400 || a.json(t)["code"] != "invalid_argument" {
		t.Errorf("file as dir: %d %s", a.status, a.body)
	}
	if a := list(`{}`); a.status != 200 || !strings.Contains(string(a.body), `"/home/user/a"`) {
		t.Errorf("empty path lists the home: %d %s", a.status, a.body)
	}
	if a := envd(t, s, c, "POST", wire.PathMakeDir, wire.ContentTypeJSON, []byte(`{"path":"a"}`)); a.status != 409 || a.json(t)["code"] != "already_exists" {
		t.Errorf("MakeDir of an existing dir: %d %s", a.status, a.body)
	}
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}
