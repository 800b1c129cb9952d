package access

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// A stream token lets a client that cannot send headers (a browser's
// EventSource) read one resource for a short time: base64url("v1|"+
// resource+"|"+expiry unix seconds) "." base64url(HMAC-SHA256 of that).
// The resource is bound into the MAC, so a token never opens another one.

var strict = base64.RawURLEncoding.Strict()

// Signer makes and checks tokens with one secret, shared by every API and
// streamer through the access bucket.
type Signer struct{ secret []byte }

// NewSigner returns a Signer; secret should be 32 random bytes.
func NewSigner(secret []byte) *Signer { return &Signer{secret: secret} }

// StreamResource names a stream for Sign and Verify.
func StreamResource(streamID string) string { return "stream:" + streamID }

// Sign returns a token for resource valid until exp.
func (s *Signer) Sign(resource string, exp time.Time) string {
	payload := "v1|" + resource + "|" + strconv.FormatInt(exp.Unix(), 10)
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." +
		base64.RawURLEncoding.EncodeToString(s.mac(payload))
}

// Grant is what a bound token was issued for: the API key that asked for
// it and the incarnation of the resource's project. StreamGate checks both
// when the token is used, so a revoked key's or a deleted project's tokens
// stop working before they expire.
type Grant struct {
	KeyID       string
	Incarnation string
}

// SignFor returns a token for resource valid until exp and bound to g:
// base64url("v2|"+resource+"|"+expiry+"|"+key id+"|"+incarnation) "."
// MAC.
func (s *Signer) SignFor(resource string, g Grant, exp time.Time) string {
	payload := "v2|" + resource + "|" + strconv.FormatInt(exp.Unix(), 10) + "|" + g.KeyID + "|" + g.Incarnation
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." +
		base64.RawURLEncoding.EncodeToString(s.mac(payload))
}

// Verify checks that token was signed for resource and has not expired.
// It returns a KindUnauthenticated *Error when not.
func (s *Signer) Verify(token, resource string, now time.Time) error {
	_, _, err := s.VerifyGrant(token, resource, now)
	return err
}

// VerifyGrant is Verify, and returns what a bound token (SignFor) was
// issued for; bound is false for an unbound one (Sign).
func (s *Signer) VerifyGrant(token, resource string, now time.Time) (g Grant, bound bool, err error) {
	err = s.verify(token, resource, now, &g, &bound)
	return g, bound, err
}

func (s *Signer) verify(token, resource string, now time.Time, g *Grant, bound *bool) error {
	invalid := errorf(KindUnauthenticated, "invalid_token", "the stream token is not valid for this stream")
	p64, m64, ok := strings.Cut(token, ".")
	if !ok || len(token) > 1024 {
		return invalid
	}
	// Strict: a token has one spelling; unused trailing bits that differ
	// would otherwise decode to the same bytes.
	payload, err1 := strict.DecodeString(p64)
	mac, err2 := strict.DecodeString(m64)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, s.mac(string(payload))) {
		return invalid
	}
	parts := strings.Split(string(payload), "|")
	switch {
	case len(parts) == 3 && parts[0] == "v1" && parts[1] == resource:
	case len(parts) == 5 && parts[0] == "v2" && parts[1] == resource:
		*g, *bound = Grant{KeyID: parts[3], Incarnation: parts[4]}, true
	default:
		return invalid
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return invalid
	}
	if now.Unix() >= exp {
		return errorf(KindUnauthenticated, "expired_token", "the stream token expired; get a fresh events_url from GET /v1/jobs/{id}")
	}
	return nil
}

func (s *Signer) mac(payload string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// BatchResource names a batch's event stream for Sign and Verify.
func BatchResource(batchID string) string { return "batch:" + batchID }

// ProjectResource names a project's lifecycle event stream for Sign and
// Verify. The API issues no token for it (its readers send a key), so a
// token for a stream or a batch never opens it.
func ProjectResource(project string) string { return "project:" + project }

// NATSResource names a NATS credential of a project for SignFor: the
// project's output and events, read straight from NATS (see
// NATSCredential). nonce makes each credential's resource its own, and
// names its private inbox.
func NATSResource(project, nonce string) string { return "nats:" + project + ":" + nonce }

// NATSCredential is what a NATS credential token claims, read without
// checking its MAC: the caller then checks it with StreamGate.Admit
// against NATSResource(Project, Nonce), which verifies MAC, expiry and
// key.
type NATSCredential struct {
	Project string
	Nonce   string
	Expires time.Time
}

// ParseNATSCredential reads what a bound NATS credential token claims; ok
// is false when token is not one. It does not verify the token.
func ParseNATSCredential(token string) (c NATSCredential, ok bool) {
	p64, _, found := strings.Cut(token, ".")
	if !found || len(token) > 1024 {
		return c, false
	}
	payload, err := strict.DecodeString(p64)
	if err != nil {
		return c, false
	}
	parts := strings.Split(string(payload), "|")
	if len(parts) != 5 || parts[0] != "v2" {
		return c, false
	}
	kind, rest, _ := strings.Cut(parts[1], ":")
	project, nonce, found := strings.Cut(rest, ":")
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if kind != "nats" || !found || project == "" || nonce == "" || err != nil {
		return c, false
	}
	return NATSCredential{Project: project, Nonce: nonce, Expires: time.Unix(exp, 0)}, true
}
