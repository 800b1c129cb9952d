// Package openapitest checks HTTP traffic in tests against rdev's OpenAPI
// document (pkg/contracts/openapi), so the document cannot drift from the
// server: every request and reply an HTTP test exchanges through
// Transport is validated with kin-openapi's openapi3filter. It is a module
// of its own so that pkg/contracts stays standard library only.
package openapitest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/rdev-dev/rdev/pkg/contracts/openapi"
)

// Document returns the OpenAPI document, loaded and validated.
func Document(t testing.TB) *openapi3.T {
	t.Helper()
	doc, err := load()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func load() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(openapi.JSON())
	if err != nil {
		return nil, fmt.Errorf("load openapi.json: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapi.json is not valid OpenAPI: %w", err)
	}
	doc.Servers = nil // match whatever host a test server listens on
	return doc, nil
}

// Operations returns every operation of the document as "METHOD /path",
// with path parameters as OpenAPI writes them ({id}).
func Operations(t testing.TB) []string {
	t.Helper()
	var ops []string
	for path, item := range Document(t).Paths.Map() {
		for method := range item.Operations() {
			ops = append(ops, method+" "+path)
		}
	}
	return ops
}

// Transport returns a RoundTripper that sends through base (nil:
// http.DefaultTransport) and fails t on traffic the document does not
// describe (paths outside /v1 are not the document's):
//   - a request to a path and method the document lacks must be answered
//     404 or 405;
//   - a request the document refuses must be refused by the server too
//     (a 4xx), since tests send bad input on purpose;
//   - every reply must match the operation's: its status, headers, content
//     type and, for JSON, its body. An event stream's body is not read:
//     its events' data schemas are documented in the operation.
func Transport(t testing.TB, base http.RoundTripper) http.RoundTripper {
	t.Helper()
	if base == nil {
		base = http.DefaultTransport
	}
	registerNDJSON.Do(func() { openapi3filter.RegisterBodyDecoder("application/x-ndjson", decodeNDJSON) })
	router, err := loadRouter()
	if err != nil {
		t.Fatalf("openapi router: %v", err)
	}
	return &transport{t: t, base: base, router: router}
}

// loadRouter loads the document once per test binary: it never changes,
// and tests open many connections. FindRoute only reads the router.
var loadRouter = sync.OnceValues(func() (routers.Router, error) {
	doc, err := load()
	if err != nil {
		return nil, err
	}
	return gorillamux.NewRouter(doc)
})

// registerNDJSON guards openapi3filter's registry of body decoders, which
// is the library's global.
var registerNDJSON sync.Once

type transport struct {
	t      testing.TB
	base   http.RoundTripper
	router routers.Router
}

func (v *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasPrefix(req.URL.Path, "/v1/") {
		return v.base.RoundTrip(req) // health and metrics: not the API's
	}
	body, err := readAll(&req.Body)
	if err != nil {
		return nil, err
	}
	what := req.Method + " " + req.URL.Path
	route, params, routeErr := v.router.FindRoute(req)
	var in *openapi3filter.RequestValidationInput
	var reqErr error
	if routeErr == nil {
		check := req.Clone(req.Context())
		check.Body = io.NopCloser(bytes.NewReader(body))
		in = &openapi3filter.RequestValidationInput{Request: check, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: authenticate, MultiError: true}}
		reqErr = openapi3filter.ValidateRequest(req.Context(), in)
	}
	resp, err := v.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	switch {
	case routeErr != nil:
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			v.t.Errorf("openapi: %s is not in openapi.yaml (%v), yet the server answered %d", what, routeErr, resp.StatusCode)
		}
		return resp, nil
	case reqErr != nil && (resp.StatusCode < 400 || resp.StatusCode >= 500):
		v.t.Errorf("openapi: %s does not match openapi.yaml, yet the server answered %d: %v", what, resp.StatusCode, reqErr)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" {
		b, err := readAll(&resp.Body)
		if err != nil {
			return nil, err
		}
		out.SetBodyBytes(b)
	} else {
		out.Options.ExcludeResponseBody = true // a stream: status and content type only
	}
	if err := openapi3filter.ValidateResponse(req.Context(), out); err != nil {
		v.t.Errorf("openapi: the reply %d to %s does not match openapi.yaml: %v", resp.StatusCode, what, err)
	}
	return resp, nil
}

// readAll reads *body and puts back a reader of what it read.
func readAll(body *io.ReadCloser) ([]byte, error) {
	if *body == nil || *body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(*body)
	(*body).Close()
	*body = io.NopCloser(bytes.NewReader(b))
	return b, err
}

// authenticate checks that the credentials a security scheme names are
// present; whether they are valid is the server's to say.
func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	req := in.RequestValidationInput.Request
	switch s := in.SecurityScheme; {
	case s.Type == "http" && s.Scheme == "bearer":
		if !strings.HasPrefix(req.Header.Get("Authorization"), "Bearer ") {
			return errors.New("no bearer key")
		}
	case s.Type == "apiKey" && s.In == "query":
		if req.URL.Query().Get(s.Name) == "" {
			return fmt.Errorf("no %s query parameter", s.Name)
		}
	default:
		return fmt.Errorf("security scheme %q unknown to openapitest", in.SecuritySchemeName)
	}
	return nil
}

// decodeNDJSON reads one JSON value a line, as an array.
func decodeNDJSON(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	items := []any{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var v any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return nil, err
		}
		items = append(items, v)
	}
	return items, sc.Err()
}
