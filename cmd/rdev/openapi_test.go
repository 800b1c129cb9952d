package main

import (
	"context"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/natskv"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api"
	"github.com/rdev-dev/rdev/services/streamer"
)

// echoParam is a path parameter as Echo writes it (:id).
var echoParam = regexp.MustCompile(`:([a-z_]+)`)

// The routes of the API and the streamer, registered as `rdev up` does, and
// the operations of openapi.yaml are the same set: an endpoint cannot be
// added to one and forgotten in the other.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	ctx := t.Context()
	state, err := js.KeyValue(ctx, contracts.BucketState)
	must(t, err, "state bucket")
	akv, err := js.KeyValue(ctx, contracts.BucketAccess)
	must(t, err, "access bucket")
	store, err := natskv.Open(ctx, akv)
	must(t, err, "access store")
	secret, err := store.TokenSecret(ctx)
	must(t, err, "token secret")
	signer, log := access.NewSigner(secret), slog.New(slog.DiscardHandler)
	a, err := api.New(api.Config{MaxBodyBytes: 64 << 10, MaxTimeout: time.Hour}, api.Deps{JS: js, State: state, Access: store, Signer: signer, Log: log})
	must(t, err, "api")
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	st, err := streamer.New(streamer.Config{}, streamer.Deps{JS: js, State: state, Gate: &access.StreamGate{Signer: signer, Keys: store, Projects: store}, Log: log})
	must(t, err, "streamer")
	t.Cleanup(func() { _ = st.Shutdown(context.Background()) })
	e := echo.New()
	a.Register(e)
	st.Register(e)

	var routes []string
	for _, r := range e.Routes() {
		if strings.HasPrefix(r.Path, "/v1/") {
			routes = append(routes, r.Method+" "+echoParam.ReplaceAllString(r.Path, "{$1}"))
		}
	}
	ops := openapitest.Operations(t)
	for _, r := range routes {
		if !slices.Contains(ops, r) {
			t.Errorf("route %s is not in pkg/contracts/openapi/openapi.yaml", r)
		}
	}
	for _, op := range ops {
		if !slices.Contains(routes, op) {
			t.Errorf("openapi.yaml has %s, which the server does not", op)
		}
	}
	if len(routes) == 0 {
		t.Fatal("no /v1 routes registered")
	}
}
