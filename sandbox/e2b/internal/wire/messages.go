package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Network constants of E2B (see /work/shared/e2b-protocol.md sections 1-3).
const (
	EnvdPort = 49983

	HeaderAPIKey          = "X-API-Key"
	HeaderAccessToken     = "X-Access-Token"
	HeaderSandboxID       = "E2b-Sandbox-Id"
	HeaderSandboxPort     = "E2b-Sandbox-Port"
	HeaderConnectTimeout  = "Connect-Timeout-Ms"
	HeaderConnectProtocol = "Connect-Protocol-Version"
	HeaderKeepalive       = "Keepalive-Ping-Interval"

	ContentTypeJSON        = "application/json"
	ContentTypeConnectJSON = "application/connect+json"
	ContentTypeOctetStream = "application/octet-stream"

	PathSandboxes  = "/sandboxes"
	PathStart      = "/process.Process/Start"
	PathSendSignal = "/process.Process/SendSignal"
	PathListDir    = "/filesystem.Filesystem/ListDir"
	PathMakeDir    = "/filesystem.Filesystem/MakeDir"
	PathFiles      = "/files"
	PathHealth     = "/health"

	// FormFieldFile is the multipart field name envd reads uploads from.
	FormFieldFile = "file"

	// ClientID is the deprecated constant the API returns in every Sandbox.
	ClientID = "6532622b"

	SignalKill = "SIGNAL_SIGKILL"
	SignalTerm = "SIGNAL_SIGTERM"

	// Connect error codes used here (string codes of the Connect protocol).
	ConnectInvalidArgument  = "invalid_argument"
	ConnectNotFound         = "not_found"
	ConnectAlreadyExists    = "already_exists"
	ConnectDeadlineExceeded = "deadline_exceeded"
	ConnectUnauthenticated  = "unauthenticated"
	ConnectUnimplemented    = "unimplemented"
	ConnectInternal         = "internal"

	// File types of EntryInfo.
	FileTypeFile      = "FILE_TYPE_FILE"
	FileTypeDirectory = "FILE_TYPE_DIRECTORY"
	FileTypeSymlink   = "FILE_TYPE_SYMLINK"
)

// NewSandbox is the body of POST /sandboxes.
type NewSandbox struct {
	TemplateID          string            `json:"templateID"`
	Timeout             int               `json:"timeout"`
	Metadata            map[string]string `json:"metadata"`
	EnvVars             map[string]string `json:"envVars"`
	Secure              bool              `json:"secure"`
	AllowInternetAccess bool              `json:"allow_internet_access"`
}

// Sandbox is the 201 body of POST /sandboxes. Domain null means "use the
// configured domain".
type Sandbox struct {
	TemplateID      string  `json:"templateID"`
	SandboxID       string  `json:"sandboxID"`
	ClientID        string  `json:"clientID"`
	EnvdVersion     string  `json:"envdVersion"`
	Alias           string  `json:"alias,omitempty"`
	EnvdAccessToken string  `json:"envdAccessToken,omitempty"`
	Domain          *string `json:"domain"`
}

// SandboxDetail is the 200 body of GET /sandboxes/{id}; it carries the
// envdAccessToken, which is how a second process reaches a sandbox it did
// not create.
type SandboxDetail struct {
	TemplateID      string            `json:"templateID"`
	Alias           string            `json:"alias,omitempty"`
	SandboxID       string            `json:"sandboxID"`
	ClientID        string            `json:"clientID"`
	StartedAt       string            `json:"startedAt"`
	EndAt           string            `json:"endAt"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	Domain          *string           `json:"domain"`
	CPUCount        int               `json:"cpuCount"`
	MemoryMB        int               `json:"memoryMB"`
	DiskSizeMB      int               `json:"diskSizeMB"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	State           string            `json:"state"`
}

// SetTimeout is the body of POST /sandboxes/{id}/timeout.
type SetTimeout struct {
	Timeout int `json:"timeout"`
}

// APIError is the error body of the control plane and of envd's HTTP
// endpoints: code is the numeric HTTP status.
type APIError struct {
	Code      int    `json:"code"`
	Message   string `json:"message"`
	ErrorCode string `json:"error_code,omitempty"`
}

// ProxyNotFound is the 502 body of the edge proxy for an unknown sandbox.
type ProxyNotFound struct {
	SandboxID string `json:"sandboxId"`
	Message   string `json:"message"`
	Code      int    `json:"code"`
}

// ProxyNotFoundMessage is the message of ProxyNotFound.
const ProxyNotFoundMessage = "The sandbox was not found"

// ConnectError is a Connect error: code is a string such as "not_found".
type ConnectError struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
}

// EndStream is the JSON of a 0x02 envelope: {} on success.
type EndStream struct {
	Error    *ConnectError       `json:"error,omitempty"`
	Metadata map[string][]string `json:"metadata,omitempty"`
}

// ProcessConfig is what to run. Cwd empty means the user's home.
type ProcessConfig struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args,omitempty"`
	Envs map[string]string `json:"envs,omitempty"`
	Cwd  string            `json:"cwd,omitempty"`
}

// StartRequest is the one message of process.Process/Start. Stdin must be
// sent as false, or envd opens a stdin pipe and `cat` blocks forever.
type StartRequest struct {
	Process ProcessConfig `json:"process"`
	Stdin   *bool         `json:"stdin,omitempty"`
}

// StartResponse is one message of the Start stream.
type StartResponse struct {
	Event ProcessEvent `json:"event"`
}

// ProcessEvent is a oneof: exactly one field is set.
type ProcessEvent struct {
	Start     *StartEvent `json:"start,omitempty"`
	Data      *DataEvent  `json:"data,omitempty"`
	End       *EndEvent   `json:"end,omitempty"`
	Keepalive *struct{}   `json:"keepalive,omitempty"`
}

// StartEvent is always first on success.
type StartEvent struct {
	Pid uint32 `json:"pid,omitempty"`
}

// DataEvent holds one output chunk (bytes are base64 in JSON).
type DataEvent struct {
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	Pty    []byte `json:"pty,omitempty"`
}

// EndEvent reports how the process ended. Proto3 JSON omits defaults:
// exitCode 0 and exited false are absent.
type EndEvent struct {
	ExitCode int32   `json:"exitCode,omitempty"`
	Exited   bool    `json:"exited,omitempty"`
	Status   string  `json:"status,omitempty"`
	Error    *string `json:"error,omitempty"`
}

// ProcessSelector picks a process by pid or tag.
type ProcessSelector struct {
	Pid uint32 `json:"pid,omitempty"`
	Tag string `json:"tag,omitempty"`
}

// SendSignalRequest is the body of process.Process/SendSignal. Signal is a
// name ("SIGNAL_SIGKILL") on the way out; the fake also accepts numbers.
type SendSignalRequest struct {
	Process ProcessSelector `json:"process"`
	Signal  json.RawMessage `json:"signal"`
}

// ListDirRequest is the body of filesystem.Filesystem/ListDir (depth 0 = 1).
type ListDirRequest struct {
	Path  string `json:"path"`
	Depth uint32 `json:"depth,omitempty"`
}

// MakeDirRequest is the body of filesystem.Filesystem/MakeDir; an existing
// directory gives already_exists (HTTP 409).
type MakeDirRequest struct {
	Path string `json:"path"`
}

// ListDirResponse lists entries of every level up to depth, without the root.
type ListDirResponse struct {
	Entries []EntryInfo `json:"entries,omitempty"`
}

// EntryInfo describes one filesystem entry.
type EntryInfo struct {
	Name          string `json:"name"`
	Type          string `json:"type,omitempty"`
	Path          string `json:"path"`
	Size          Int64  `json:"size,omitempty"`
	Mode          uint32 `json:"mode,omitempty"`
	Permissions   string `json:"permissions,omitempty"`
	Owner         string `json:"owner,omitempty"`
	Group         string `json:"group,omitempty"`
	ModifiedTime  string `json:"modifiedTime,omitempty"`
	SymlinkTarget string `json:"symlinkTarget,omitempty"`
}

// UploadedEntry is one element of the 200 body of POST /files.
type UploadedEntry struct {
	Name string `json:"name"`
	Path string `json:"path"`
	Type string `json:"type"`
}

// Int64 is a proto3-JSON int64: written as a JSON string ("11"), read from a
// string or a number.
type Int64 int64

func (n Int64) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(strconv.FormatInt(int64(n), 10))), nil
}

func (n *Int64) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		b = []byte(s)
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return err
	}
	*n = Int64(v)
	return nil
}
