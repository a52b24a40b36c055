package sandbox

import "github.com/polos-run/polos/perr"

// Stable error codes of the sandbox tools.
const (
	CodeBadRequest       perr.Code = "SANDBOX_BAD_REQUEST"       // malformed or missing arguments
	CodeNotFound         perr.Code = "SANDBOX_NOT_FOUND"         // file or directory missing
	CodeOutsideWorkspace perr.Code = "SANDBOX_OUTSIDE_WORKSPACE" // path escapes the workspace
	CodeBinaryFile       perr.Code = "SANDBOX_BINARY_FILE"       // read of a non-text file
	CodeTooLarge         perr.Code = "SANDBOX_TOO_LARGE"         // file over the size cap
	CodeEditMismatch     perr.Code = "SANDBOX_EDIT_MISMATCH"     // old_text found 0 or >1 times
	CodeSandboxLost      perr.Code = "SANDBOX_LOST"              // the sandbox no longer exists
	CodeProvider         perr.Code = "SANDBOX_PROVIDER"          // the provider failed (engine, API)
	CodeUnavailable      perr.Code = "SANDBOX_UNAVAILABLE"       // no sandbox host answered
	CodeHardLink         perr.Code = "SANDBOX_HARD_LINK"         // write to a file with more than one hard link

	// The sandbox host's refusals (package dispatch, ADR 0112).
	CodeNotAllowed perr.Code = "SANDBOX_NOT_ALLOWED" // a create asks for a workspace, image, network or env the host does not allow
	CodeForged     perr.Code = "SANDBOX_FORGED"      // the Info does not match its seal (altered, forged, or another host key)
	CodeNotYours   perr.Code = "SANDBOX_NOT_YOURS"   // the Info is sealed for another run, or the request names no run
	CodeUnsealed   perr.Code = "SANDBOX_UNSEALED"    // the Info has no seal (recorded before sandboxes were sealed)
)
