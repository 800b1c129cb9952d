package access

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// KeyPrefix starts every generated API key, so a leaked key is easy to
// recognise (and for secret scanners to find).
const KeyPrefix = "rdev_"

// BootstrapKeyID is the id of the admin key rdev creates on first start
// (or from RDEV_BOOTSTRAP_API_KEY). Its secret need not carry its id.
const BootstrapKeyID = "bootstrap"

// MinBootstrapKeyLen is the shortest secret accepted for the bootstrap key.
const MinBootstrapKeyLen = 32

// Role is what a key may do within a project.
type Role string

// The roles.
const (
	// RoleSubmit runs jobs in the project.
	RoleSubmit Role = "submit"
	// RoleRead reads the project, its jobs, streams and audit records.
	RoleRead Role = "read"
)

// The scopes a key may hold besides project:<id>:<role>.
const (
	// ScopeAdmin allows everything.
	ScopeAdmin = "admin"
	// ScopeRead allows reading every project (a read-only key).
	ScopeRead = "read"
)

// Key is an API key as stored: its secret only as a hash.
type Key struct {
	// ID is the key's public id; generated secrets carry it.
	ID string `json:"id"`
	// Name is for people.
	Name string `json:"name"`
	// Hash is the hex SHA-256 of the secret. Secrets are 256 random bits
	// (or, for the bootstrap key, at least 32 characters), so a fast hash
	// is enough: there is nothing to guess.
	Hash string `json:"hash"`
	// Scopes say what the key may do: "admin", "read" or
	// "project:<id>:<role>".
	Scopes []string `json:"scopes"`
	// AllowedIPs are the CIDRs the key may be used from; empty allows any.
	AllowedIPs []string `json:"allowed_ips"`
	// RateLimit bounds the key's requests; nil takes the server default.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// ExpiresAt is when the key stops working; nil never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// RevokedAt is when the key was revoked; nil while it is valid.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// CreatedAt is when the key was created.
	CreatedAt time.Time `json:"created_at"`
	// LastUsedAt is when the key last authenticated a request (updated at
	// most once a minute).
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// NewSecret returns a fresh key secret for the key id: rdev_<id>_<43
// characters of base64url randomness>.
func NewSecret(id string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return KeyPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(b)
}

// HashSecret returns the stored form of a secret.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// KeyIDOf returns the id a secret names: the <id> of rdev_<id>_<random>,
// or BootstrapKeyID for any other string.
func KeyIDOf(secret string) string {
	rest, ok := strings.CutPrefix(secret, KeyPrefix)
	if !ok {
		return BootstrapKeyID
	}
	id, _, ok := strings.Cut(rest, "_")
	if !ok || !contracts.ValidID(id) {
		return BootstrapKeyID
	}
	return id
}

// Matches reports, in constant time, whether secret is k's.
func (k Key) Matches(secret string) bool {
	got := HashSecret(secret)
	return subtle.ConstantTimeCompare([]byte(got), []byte(k.Hash)) == 1
}

// ValidBootstrapSecret reports whether s can serve as the bootstrap key:
// at least MinBootstrapKeyLen printable ASCII characters without spaces,
// so it survives HTTP headers and shells unchanged.
func ValidBootstrapSecret(s string) bool {
	if len(s) < MinBootstrapKeyLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' {
			return false
		}
	}
	return true
}

// NormalizeScopes checks scopes and returns them sorted without
// duplicates.
func NormalizeScopes(scopes []string) ([]string, error) {
	if len(scopes) == 0 {
		return nil, errorf(KindInvalid, "invalid_scopes", `a key needs at least one scope: "admin", "read" or "project:<id>:<submit|read>"`)
	}
	out := make([]string, 0, len(scopes))
	for _, s := range scopes {
		if _, _, err := parseScope(s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// parseScope splits a project scope; project is "" for admin and read.
func parseScope(s string) (project string, role Role, err error) {
	switch s {
	case ScopeAdmin, ScopeRead:
		return "", Role(s), nil
	}
	parts := strings.Split(s, ":")
	if len(parts) == 3 && parts[0] == "project" && contracts.ValidProjectID(parts[1]) &&
		(parts[2] == string(RoleSubmit) || parts[2] == string(RoleRead)) {
		return parts[1], Role(parts[2]), nil
	}
	return "", "", errorf(KindInvalid, "invalid_scopes", `scope %q is not "admin", "read" or "project:<id>:<submit|read>"`, s)
}

// ScopeProjects returns the projects scopes name, sorted, each once.
func ScopeProjects(scopes []string) []string {
	var out []string
	for _, s := range scopes {
		if p, _, err := parseScope(s); err == nil && p != "" {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// CheckName checks a name people gave a project or key: at most 200
// characters, none of them a control character (an escape sequence or a
// line break would be replayed into terminals and logs).
func CheckName(field, name string) error {
	if utf8.RuneCountInString(name) > 200 || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return errorf(KindInvalid, "invalid_name", "%s must be at most 200 characters, without control characters (escape, newline, tab …)", field)
	}
	return nil
}

// ScopesWithout returns scopes minus those about project.
func ScopesWithout(scopes []string, project string) []string {
	return slices.DeleteFunc(slices.Clone(scopes), func(s string) bool {
		p, _, err := parseScope(s)
		return err == nil && p == project
	})
}
