package access

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// ProjectLookup finds projects by id.
type ProjectLookup interface {
	// Project returns a project or an error wrapping ErrNotFound.
	Project(ctx context.Context, id string) (Project, error)
}

// StreamGate decides who may read a job's output stream: the holder of a
// stream token signed for that stream, or a key with read access to the
// stream's project. The project's allowed IPs apply to both, except to
// admin keys, which are exempt from them everywhere (see Authorize). It
// checks again while a stream is open (Hold, Watch). Use it by pointer.
type StreamGate struct {
	Signer   *Signer
	Keys     Keys
	Projects ProjectLookup
	// Changes tells Watch about writes to keys and projects; nil uses
	// Keys when it is a ChangeFeed (the natskv store is both).
	Changes ChangeFeed
	// PollEvery is how often Watch checks every held stream when it cannot
	// watch Changes; 0 means DefaultPollEvery.
	PollEvery time.Duration
	// Now returns the time; nil means time.Now.
	Now func() time.Time

	holds  holds  // streams open under Hold
	recent recent // keys and projects read, while Watch follows changes
}

// Reader is a caller admitted by StreamGate.Admit.
type Reader struct {
	// Principal is the key's, when the caller sent a key.
	Principal Principal
	// Token is true when the caller sent a valid stream token.
	Token bool
	// Grant is what a bound token was issued for, when Bound.
	Grant Grant
	Bound bool
}

// Admit checks the credentials before the resource (StreamResource,
// BatchResource or ProjectResource) is looked up, so an anonymous caller
// learns nothing about which exist. A token wins over a key when both are
// sent.
func (g *StreamGate) Admit(ctx context.Context, token, secret string, client netip.Addr, resource string) (Reader, error) {
	now := g.now()
	if token != "" {
		grant, bound, err := g.Signer.VerifyGrant(token, resource, now)
		if err != nil {
			return Reader{}, err
		}
		if bound {
			// The key that asked for the token must still be good.
			k, err := gateKeys{g}.Key(ctx, grant.KeyID)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return Reader{}, err
			}
			if err != nil || k.RevokedAt != nil || (k.ExpiresAt != nil && !now.Before(*k.ExpiresAt)) {
				return Reader{}, errorf(KindUnauthenticated, "invalid_token", "the API key this stream token was issued to is revoked, expired or deleted")
			}
		}
		return Reader{Token: true, Grant: grant, Bound: bound}, nil
	}
	if secret == "" {
		return Reader{}, errorf(KindUnauthenticated, "missing_credentials", "send the events_url's token parameter, or an API key as 'Authorization: Bearer <key>'")
	}
	p, err := Authenticate(ctx, gateKeys{g}, secret, client, now)
	if err != nil {
		return Reader{}, err
	}
	return Reader{Principal: p}, nil
}

// Allow checks, once the stream's project and the project's incarnation
// it was made in are known, that r may read it from client. A key without
// read access gets KindNotFound: the stream is none of its business; so
// does everyone when the project is now another incarnation (deleted and
// created again), and a bound token when its project is deleted.
func (g *StreamGate) Allow(ctx context.Context, r Reader, project, incarnation string, client netip.Addr) error {
	return g.allow(ctx, gateProjects{g}, r, project, incarnation, client)
}

func (g *StreamGate) allow(ctx context.Context, projects ProjectLookup, r Reader, project, incarnation string, client netip.Addr) error {
	if !r.Token && !r.Principal.Can(project, RoleRead) {
		return StreamNotFound()
	}
	p, err := projects.Project(ctx, project)
	if errors.Is(err, ErrNotFound) {
		if r.Bound {
			return StreamNotFound() // a bound token dies with its project
		}
		return nil // project deleted: its remaining output stays readable to those allowed above
	}
	if err != nil {
		return err
	}
	if p.Incarnation != incarnation || (r.Bound && p.Incarnation != r.Grant.Incarnation) {
		return StreamNotFound() // made in, or issued for, the project's earlier incarnation
	}
	if !r.Token && r.Principal.Admin() {
		return nil // exempt from the project's allowed IPs, as on every route
	}
	if !AllowsIP(p.AllowedIPs, client) {
		return errorf(KindForbidden, "ip_not_allowed", "project %q may not be used from %s", project, client)
	}
	return nil
}

// Project looks a project up, for a stream that is the project's own
// (its lifecycle events) and so is made in its current incarnation.
func (g *StreamGate) Project(ctx context.Context, id string) (Project, error) {
	return gateProjects{g}.Project(ctx, id)
}

// StreamNotFound is the refusal for a stream that does not exist and for
// one the caller may not read, alike, so the answer tells nothing about
// which streams exist.
func StreamNotFound() error {
	return errorf(KindNotFound, "stream_not_found", "no such stream (unknown, expired, or not readable with these credentials)")
}
