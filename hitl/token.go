package hitl

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strings"
	"time"

	"github.com/polos-run/polos/perr"
)

// Token error codes.
const (
	CodeBadToken     perr.Code = "APPROVAL_TOKEN_INVALID" // forged, malformed or for another run/step
	CodeTokenExpired perr.Code = "APPROVAL_TOKEN_EXPIRED"
	CodeWeakSecret   perr.Code = "APPROVAL_SECRET_WEAK"
)

// Token defaults.
const (
	DefaultTokenTTL = 7 * 24 * time.Hour // approval links live a week unless the suspend times out earlier
	MinSecretBytes  = 32
	tokenVersion    = "v1"
)

// Claims is what an approval token binds.
//
// Single use: a token only authorises deciding its (namespace, run, step),
// and a step can be decided once (the decision is a CAS append on the run's
// own subject, client.Resume refuses a second one with ALREADY_DECIDED). So
// the run's history is the durable record of spent tokens: no separate
// used-token store to lose or to keep in sync.
type Claims struct {
	ID        string `json:"id"` // random; recorded as decided_by "web:<id>"
	Namespace string `json:"ns"`
	RunID     string `json:"run"`
	StepKey   string `json:"step"`
	Expires   int64  `json:"exp"` // unix seconds
}

// IssueToken signs a token for (ns, runID, stepKey) valid for ttl (0:
// DefaultTokenTTL). Format: "v1.<base64url(claims JSON)>.<base64url(HMAC-SHA256)>".
func IssueToken(secret []byte, ns, runID, stepKey string, ttl time.Duration, now time.Time) (string, Claims, error) {
	if len(secret) < MinSecretBytes {
		return "", Claims{}, weakSecret()
	}
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", Claims{}, perr.Wrap(err, CodeBadToken, "", "no randomness for a token ID")
	}
	c := Claims{ID: "tok_" + hex.EncodeToString(id[:]), Namespace: ns, RunID: runID, StepKey: stepKey, Expires: now.Add(ttl).Unix()}
	body, _ := json.Marshal(c)
	enc := tokenVersion + "." + base64.RawURLEncoding.EncodeToString(body)
	return enc + "." + base64.RawURLEncoding.EncodeToString(sign(secret, enc)), c, nil
}

// VerifyToken checks the signature, the binding to (ns, runID, stepKey) and
// the expiry. Any failure is CodeBadToken (one message for all forgeries, so
// the page reveals nothing) or CodeTokenExpired.
func VerifyToken(secret []byte, token, ns, runID, stepKey string, now time.Time) (Claims, error) {
	if len(secret) < MinSecretBytes {
		return Claims{}, weakSecret()
	}
	invalid := perr.New(CodeBadToken, "ask for a new approval link", "the approval link is invalid")
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != tokenVersion || len(token) > 4096 {
		return Claims{}, invalid
	}
	mac, err := b64.DecodeString(parts[2])
	if err != nil || !hmac.Equal(mac, sign(secret, parts[0]+"."+parts[1])) {
		return Claims{}, invalid
	}
	body, err := b64.DecodeString(parts[1])
	var c Claims
	if err != nil || json.Unmarshal(body, &c) != nil {
		return Claims{}, invalid
	}
	if c.Namespace != ns || c.RunID != runID || c.StepKey != stepKey {
		return Claims{}, invalid
	}
	if now.Unix() >= c.Expires {
		return Claims{}, perr.New(CodeTokenExpired, "ask for a new approval link", "the approval link expired at %s", time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	return c, nil
}

// TokenID returns the (unverified) ID of a token, for logs and dedupe
// keys; "" when malformed.
func TokenID(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	body, err := b64.DecodeString(parts[1])
	var c Claims
	if err != nil || json.Unmarshal(body, &c) != nil {
		return ""
	}
	return c.ID
}

// ApprovalURL is the approval page of a waiting step.
func ApprovalURL(baseURL, runID, stepKey, token string) string {
	return strings.TrimRight(baseURL, "/") + "/approve/" + url.PathEscape(runID) + "/" + url.PathEscape(stepKey) + "?token=" + url.QueryEscape(token)
}

func sign(secret []byte, msg string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("polos-approval\x00" + msg))
	return m.Sum(nil)
}

func weakSecret() error {
	return perr.New(CodeWeakSecret, "configure at least 32 random bytes (polosd generates one in its data dir)", "the approval token secret is shorter than %d bytes", MinSecretBytes)
}

// b64 decodes strictly, so one token has exactly one spelling.
var b64 = base64.RawURLEncoding.Strict()
