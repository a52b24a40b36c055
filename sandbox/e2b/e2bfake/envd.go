package e2bfake

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"strings"

	"github.com/polos-run/polos/sandbox/e2b/internal/wire"
)

// Messages of envd's HTTP layer.
const (
	msgUnauthorized     = "unauthorized access, please provide a valid access token or method signing if supported"
	msgMissingSignature = "missing signature query parameter"
)

// serveEnvd is envd of one sandbox.
func (s *Server) serveEnvd(sb *fakeSandbox, w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == wire.PathHealth && r.Method == http.MethodGet {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if p == wire.PathFiles {
		if sb.token != "" && r.Header.Get(wire.HeaderAccessToken) != sb.token {
			msg := msgUnauthorized
			if r.Header.Get(wire.HeaderAccessToken) == "" {
				msg = msgMissingSignature
			}
			writeAPIError(w, http.StatusUnauthorized, msg)
			return
		}
		user, ok := sb.filesUser(r.URL.Query().Get("username"))
		if !ok {
			writeAPIError(w, http.StatusUnauthorized, fmt.Sprintf("invalid username: '%s'", user))
			return
		}
		switch r.Method {
		case http.MethodGet:
			sb.download(w, r)
		case http.MethodPost:
			sb.upload(w, r)
		default:
			writeAPIError(w, http.StatusMethodNotAllowed, "method not allowed")
		}
		return
	}
	if sb.token != "" && r.Header.Get(wire.HeaderAccessToken) != sb.token {
		writeAPIError(w, http.StatusUnauthorized, msgUnauthorized)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	if user, ok := sb.rpcUser(r); !ok {
		writeConnectError(w, http.StatusUnauthorized, wire.ConnectUnauthenticated, fmt.Sprintf("invalid username: '%s'", user))
		return
	}
	switch p {
	case wire.PathStart:
		s.start(sb, w, r)
	case wire.PathSendSignal:
		unary(w, r, sb.sendSignal)
	case wire.PathListDir:
		unary(w, r, sb.listDir)
	case wire.PathMakeDir:
		unary(w, r, sb.makeDir)
	default:
		http.Error(w, "404 page not found", http.StatusNotFound)
	}
}

// knownUser reports whether name is a user of the fake sandbox. Before envd
// 0.4.0 there is no default user and the client must name one.
func (sb *fakeSandbox) knownUser(name string) bool {
	if name == "" {
		return !versionBefore(sb.envdVersion, "0.4.0")
	}
	return name == defaultUser || name == "root"
}

func (sb *fakeSandbox) filesUser(name string) (string, bool) { return name, sb.knownUser(name) }

func (sb *fakeSandbox) rpcUser(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", sb.knownUser("")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(h, "Basic "))
	if err != nil || !strings.HasPrefix(h, "Basic ") {
		return h, false
	}
	name, _, _ := strings.Cut(string(raw), ":")
	return name, sb.knownUser(name)
}

// versionBefore compares dotted versions numerically (a < b).
func versionBefore(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		var x, y int
		fmt.Sscanf(pa[i], "%d", &x)
		fmt.Sscanf(pb[i], "%d", &y)
		if x != y {
			return x < y
		}
	}
	return len(pa) < len(pb)
}

// rpcError is a Connect error a handler returns: HTTP status and code.
type rpcError struct {
	status int
	code   string
	msg    string
}

func (e *rpcError) Error() string { return e.code + ": " + e.msg }

// unary decodes a JSON request into In, calls h and writes the JSON answer.
func unary[In, Out any](w http.ResponseWriter, r *http.Request, h func(In) (Out, *rpcError)) {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != wire.ContentTypeJSON {
		w.WriteHeader(http.StatusUnsupportedMediaType)
		return
	}
	var in In
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		writeConnectError(w, http.StatusBadRequest, wire.ConnectInvalidArgument, "unmarshal message: "+err.Error())
		return
	}
	out, rerr := h(in)
	if rerr != nil {
		writeConnectError(w, rerr.status, rerr.code, rerr.msg)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// sandboxPath resolves a path as envd does (relative to /home/user, "~"
// expanded) and cleans it, so it can never climb above "/".
func sandboxPath(p string) string {
	switch {
	case p == "~":
		p = homeDir
	case strings.HasPrefix(p, "~/"):
		p = homeDir + p[1:]
	case !path.IsAbs(p):
		p = homeDir + "/" + p
	}
	return path.Clean(p)
}

// rootRel is the name of a sandbox path inside the sandbox's os.Root.
func rootRel(sp string) string {
	if sp == "/" {
		return "."
	}
	return strings.TrimPrefix(sp, "/")
}

func (sb *fakeSandbox) download(w http.ResponseWriter, r *http.Request) {
	sp := sandboxPath(r.URL.Query().Get("path"))
	rs, err := sb.resolve(sp, true)
	if err != nil {
		writeFSError(w, sp, err)
		return
	}
	f, err := sb.root.Open(rootRel(rs))
	if err != nil {
		writeFSError(w, sp, err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		writeFSError(w, sp, err)
		return
	}
	if st.IsDir() {
		writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("path '%s' is a directory", sp))
		return
	}
	w.Header().Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": path.Base(sp)}))
	http.ServeContent(w, r, path.Base(sp), st.ModTime(), f)
}

func writeFSError(w http.ResponseWriter, sp string, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		writeAPIError(w, http.StatusNotFound, fmt.Sprintf("path '%s' does not exist", sp))
	case errors.Is(err, errSymlinkLoop):
		writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("path '%s': %v", sp, err))
	case strings.Contains(err.Error(), "escapes"):
		writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("path '%s' leads outside the fake sandbox", sp))
	case strings.Contains(err.Error(), "not a directory"):
		writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("path '%s': a parent is not a directory", sp))
	default:
		writeAPIError(w, http.StatusInternalServerError, err.Error())
	}
}

func (sb *fakeSandbox) upload(w http.ResponseWriter, r *http.Request) {
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	query := r.URL.Query().Get("path")
	var written []wire.UploadedEntry
	switch {
	case ct == wire.ContentTypeOctetStream && !versionBefore(sb.envdVersion, "0.5.7"):
		if query == "" {
			writeAPIError(w, http.StatusBadRequest, "path query parameter is required for raw body upload")
			return
		}
		sp := sandboxPath(query)
		if status, msg := sb.writeFile(sp, r.Body); status != 0 {
			writeAPIError(w, status, msg)
			return
		}
		written = append(written, wire.UploadedEntry{Name: path.Base(sp), Path: sp, Type: "file"})
	case ct == "multipart/form-data" && params["boundary"] != "":
		mr, err := r.MultipartReader()
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, "error parsing multipart form: "+err.Error())
			return
		}
		seen := map[string]bool{}
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				writeAPIError(w, http.StatusBadRequest, "error reading multipart form: "+err.Error())
				return
			}
			if part.FormName() != wire.FormFieldFile {
				continue
			}
			target := query
			if target == "" {
				_, dp, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
				target = dp["filename"] // the full path, unlike part.FileName()
			}
			sp := sandboxPath(target)
			if seen[sp] {
				writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("cannot upload multiple files to the same path '%s'", sp))
				return
			}
			seen[sp] = true
			if status, msg := sb.writeFile(sp, part); status != 0 {
				writeAPIError(w, status, msg)
				return
			}
			written = append(written, wire.UploadedEntry{Name: path.Base(sp), Path: sp, Type: "file"})
		}
	default:
		writeAPIError(w, http.StatusBadRequest, "unsupported content type: "+r.Header.Get("Content-Type"))
		return
	}
	b, _ := json.Marshal(written)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8") // envd's is sniffed
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// writeFile creates parents and truncates or creates sp; status 0 is success.
func (sb *fakeSandbox) writeFile(sp string, body io.Reader) (int, string) {
	rs, err := sb.resolve(sp, true) // a dangling symlink creates its target, as open(O_CREAT) does
	if err != nil {
		return http.StatusBadRequest, fmt.Sprintf("cannot resolve '%s': %v", sp, err)
	}
	rel := rootRel(rs)
	if st, err := sb.root.Stat(rel); err == nil && st.IsDir() {
		return http.StatusBadRequest, fmt.Sprintf("path '%s' is a directory", sp)
	}
	if err := sb.root.MkdirAll(path.Dir(rel), 0o755); err != nil {
		return http.StatusBadRequest, fmt.Sprintf("cannot create the parent directories of '%s': %v", sp, err)
	}
	f, err := sb.root.OpenFile(rel, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return http.StatusBadRequest, fmt.Sprintf("cannot open '%s': %v", sp, err)
	}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return http.StatusInternalServerError, fmt.Sprintf("error writing '%s': %v", sp, err)
	}
	return 0, ""
}

func (sb *fakeSandbox) listDir(req wire.ListDirRequest) (wire.ListDirResponse, *rpcError) {
	depth := int(req.Depth)
	if depth == 0 {
		depth = 1
	}
	sp := sandboxPath(req.Path)
	rs, err := sb.resolve(sp, true) // a symlinked root is followed, as envd does
	if err != nil {
		return wire.ListDirResponse{}, &rpcError{http.StatusBadRequest, wire.ConnectInvalidArgument, err.Error()}
	}
	rel := rootRel(rs)
	st, err := sb.root.Stat(rel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return wire.ListDirResponse{}, &rpcError{http.StatusNotFound, wire.ConnectNotFound, fmt.Sprintf("directory not found: %s", sp)}
		}
		return wire.ListDirResponse{}, &rpcError{http.StatusInternalServerError, wire.ConnectInternal, err.Error()}
	}
	if !st.IsDir() {
		return wire.ListDirResponse{}, &rpcError{http.StatusBadRequest, wire.ConnectInvalidArgument, fmt.Sprintf("path is not a directory: %s", sp)}
	}
	var out wire.ListDirResponse
	err = fs.WalkDir(sb.root.FS(), rel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == rel {
			return nil
		}
		sub := strings.TrimPrefix(p, rel+"/")
		if rel == "." {
			sub = p
		}
		if strings.Count(sub, "/")+1 > depth {
			return fs.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out.Entries = append(out.Entries, entryInfo(path.Join(sp, sub), info))
		return nil
	})
	if err != nil {
		return wire.ListDirResponse{}, &rpcError{http.StatusInternalServerError, wire.ConnectInternal, fmt.Sprintf("error reading directory %s: %v", sp, err)}
	}
	return out, nil
}

func entryInfo(sp string, info fs.FileInfo) wire.EntryInfo {
	typ := wire.FileTypeFile
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		typ = wire.FileTypeSymlink
	case info.IsDir():
		typ = wire.FileTypeDirectory
	}
	return wire.EntryInfo{
		Name: path.Base(sp), Type: typ, Path: sp, Size: wire.Int64(info.Size()),
		Mode: uint32(info.Mode().Perm()), Permissions: info.Mode().String(),
		Owner: defaultUser, Group: defaultUser, ModifiedTime: info.ModTime().UTC().Format("2006-01-02T15:04:05.999999999Z07:00"),
	}
}

type makeDirResponse struct {
	Entry wire.EntryInfo `json:"entry"`
}

func (sb *fakeSandbox) makeDir(req wire.MakeDirRequest) (makeDirResponse, *rpcError) {
	sp := sandboxPath(req.Path)
	rs, err := sb.resolve(sp, true)
	if err != nil {
		return makeDirResponse{}, &rpcError{http.StatusBadRequest, wire.ConnectInvalidArgument, err.Error()}
	}
	rel := rootRel(rs)
	if st, err := sb.root.Stat(rel); err == nil {
		if st.IsDir() {
			return makeDirResponse{}, &rpcError{http.StatusConflict, wire.ConnectAlreadyExists, "directory already exists: " + sp}
		}
		return makeDirResponse{}, &rpcError{http.StatusBadRequest, wire.ConnectInvalidArgument, "path already exists but it is not a directory: " + sp}
	}
	if err := sb.root.MkdirAll(rel, 0o755); err != nil {
		return makeDirResponse{}, &rpcError{http.StatusInternalServerError, wire.ConnectInternal, err.Error()}
	}
	return makeDirResponse{Entry: wire.EntryInfo{Name: path.Base(sp), Type: wire.FileTypeDirectory, Path: sp}}, nil
}
