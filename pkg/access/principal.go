package access

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Principal is an authenticated caller: the key it presented and what the
// key's scopes grant.
type Principal struct {
	// Key is the key as stored.
	Key Key
	// admin and readAll come from the global scopes; grants from project
	// scopes.
	admin, readAll bool
	grants         map[string][]Role
}

// NewPrincipal returns the principal of a key.
func NewPrincipal(k Key) Principal {
	p := Principal{Key: k, grants: map[string][]Role{}}
	for _, s := range k.Scopes {
		project, role, err := parseScope(s)
		switch {
		case err != nil:
		case s == ScopeAdmin:
			p.admin = true
		case s == ScopeRead:
			p.readAll = true
		default:
			p.grants[project] = append(p.grants[project], role)
		}
	}
	return p
}

// Admin reports whether the key may do everything.
func (p Principal) Admin() bool { return p.admin }

// Can reports whether the key may act in role on project.
func (p Principal) Can(project string, role Role) bool {
	if p.admin || (role == RoleRead && p.readAll) {
		return true
	}
	return slices.Contains(p.grants[project], role)
}

// Projects returns the projects the key holds some role on, and whether it
// may read every project.
func (p Principal) Projects() (ids []string, all bool) {
	if p.admin || p.readAll {
		return nil, true
	}
	for id := range p.grants {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, false
}

// Keys finds stored keys by id. It is the port Authenticate reads through;
// the natskv store implements it, and the API puts a cache in front.
type Keys interface {
	// Key returns the key with id, or an error wrapping ErrNotFound.
	Key(ctx context.Context, id string) (Key, error)
}

// Authenticate checks a presented secret and the client's address, and
// returns the principal. Refusals are *Error: KindUnauthenticated for a
// missing, unknown, expired or revoked key, KindForbidden for a key used
// from an address outside its allowed IPs. Other errors are the store's.
func Authenticate(ctx context.Context, keys Keys, secret string, client netip.Addr, now time.Time) (Principal, error) {
	if secret == "" {
		return Principal{}, errorf(KindUnauthenticated, "missing_api_key", "send an API key as 'Authorization: Bearer <key>'")
	}
	invalid := errorf(KindUnauthenticated, "invalid_api_key", "the API key is not valid")
	if len(secret) > 512 {
		return Principal{}, invalid
	}
	k, err := keys.Key(ctx, KeyIDOf(secret))
	if errors.Is(err, ErrNotFound) {
		return Principal{}, invalid
	}
	if err != nil {
		return Principal{}, err
	}
	if !k.Matches(secret) {
		return Principal{}, invalid
	}
	// Only the key's holder learns why it no longer works.
	if k.RevokedAt != nil {
		return Principal{}, errorf(KindUnauthenticated, "revoked_api_key", "the API key was revoked")
	}
	if k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) {
		return Principal{}, errorf(KindUnauthenticated, "expired_api_key", "the API key expired at %s", k.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if !AllowsIP(k.AllowedIPs, client) {
		return Principal{}, errorf(KindForbidden, "ip_not_allowed", "this API key may not be used from %s", client)
	}
	return NewPrincipal(k), nil
}

// Authorize checks that p may act in role on project, whose settings are
// proj, from the client address. It returns a KindForbidden *Error when
// not.
//
// Admin keys are exempt from projects' allowed IPs (their key's own
// allowed IPs, checked by Authenticate, still apply), so an admin can
// always read and fix a project that shuts everyone out. StreamGate
// follows the same rule.
func Authorize(p Principal, proj Project, role Role, client netip.Addr) error {
	if !p.Can(proj.ID, role) {
		return errorf(KindForbidden, "forbidden", "the API key has no %s access to project %q", role, proj.ID)
	}
	if !p.Admin() && !AllowsIP(proj.AllowedIPs, client) {
		return errorf(KindForbidden, "ip_not_allowed", "project %q may not be used from %s", proj.ID, client)
	}
	return nil
}

// Forbidden returns the refusal for a request outside p's scope; callers
// use it before they look up the project, so a key learns nothing about
// projects it has no access to.
func Forbidden(project string, role Role) error {
	return errorf(KindForbidden, "forbidden", "the API key has no %s access to project %q", role, project)
}

// AdminOnly returns the refusal for an admin-only action.
func AdminOnly() error {
	return errorf(KindForbidden, "forbidden", "this needs an admin API key")
}

// BearerToken returns the credential of an "Authorization: Bearer <token>"
// header value, or "".
func BearerToken(authorization string) string {
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// ClientAddr parses the client address the transport settled on; an
// unparsable one becomes "::", which no allowed range but ::/0 contains.
func ClientAddr(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.IPv6Unspecified()
	}
	return a.Unmap()
}
