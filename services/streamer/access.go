package streamer

import (
	"context"
	"errors"
	"net/netip"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
)

// Gate decides who may read a stream; access.StreamGate implements it.
type Gate interface {
	// Admit checks a token for resource (access.StreamResource or
	// access.BatchResource) or an API key before the resource is looked up.
	Admit(ctx context.Context, token, secret string, client netip.Addr, resource string) (access.Reader, error)
	// Allow checks that the admitted reader may read a stream made in
	// project's incarnation: a project deleted and created again is
	// another incarnation, whose readers see nothing of the old one.
	Allow(ctx context.Context, r access.Reader, project, incarnation string, client netip.Addr) error
	// Hold returns a context for an allowed stream that is cancelled, with
	// an *access.Error cause of code access.CodeAccessRevoked, once r
	// may no longer read it; cancel releases it.
	Hold(ctx context.Context, r access.Reader, project, incarnation string, client netip.Addr) (context.Context, context.CancelFunc)
	// Project looks a project up (an error wrapping access.ErrNotFound
	// when there is none): a project's own feed belongs to its current
	// incarnation.
	Project(ctx context.Context, id string) (access.Project, error)
	// Watch follows changes to keys and projects for Hold until ctx ends.
	// An error means it only polls (still within seconds).
	Watch(ctx context.Context) error
}

// revokedCause returns the refusal that ended a held stream's context,
// or nil when it ended otherwise.
func revokedCause(ctx context.Context) *access.Error {
	var ae *access.Error
	if errors.As(context.Cause(ctx), &ae) && ae.Code == access.CodeAccessRevoked {
		return ae
	}
	return nil
}

// refuse answers a request the gate refused, or that it could not judge.
func (s *Service) refuse(c echo.Context, err error) error {
	if ae, _, ok := accesshttp.Refusal(err); ok {
		return accesshttp.Refuse(c, ae)
	}
	return s.unavailable(c, "check access", err)
}

// admit is the gate's Admit for the request, riding out failing storage
// (see judged).
func (s *Service) admit(c echo.Context, resource string) (access.Reader, error) {
	ctx := c.Request().Context()
	var r access.Reader
	err := s.judged(ctx, func() (err error) {
		r, err = s.gate.Admit(ctx, c.QueryParam("token"), accesshttp.Bearer(c.Request()), accesshttp.ClientIP(c), resource)
		return err
	})
	return r, err
}

// allow is the gate's Allow for the request, riding out failing storage
// (see judged).
func (s *Service) allow(c echo.Context, r access.Reader, project, incarnation string) error {
	ctx := c.Request().Context()
	return s.judged(ctx, func() error {
		return s.gate.Allow(ctx, r, project, incarnation, accesshttp.ClientIP(c))
	})
}

// judged runs an access decision as the stream's own reads run (retry):
// a refusal is final, any other error is storage failing, retried for
// UnavailableAfter. In a reconnect storm on a loaded machine the
// project's reads time out now and then, and answering those clients 503
// at once would end a browser's EventSource for good.
func (s *Service) judged(ctx context.Context, decide func() error) error {
	var refusal error
	err := s.retry(ctx, func() error {
		err := decide()
		if _, _, ok := accesshttp.Refusal(err); ok {
			refusal = err
			return nil
		}
		return err
	})
	if refusal != nil {
		return refusal
	}
	return err
}
