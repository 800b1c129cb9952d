// Package client is a Go client for rdev's HTTP API: submit commands,
// prompts and batches, read and cancel jobs, follow their output streams
// (Server-Sent Events, resumed with Last-Event-ID across disconnects),
// and manage projects, keys, secrets, the audit log and dead letters.
//
// It depends on the standard library and pkg/contracts only. Every
// request and reply body is a contracts type; every refusal of the API is
// an *Error carrying its status and machine-readable code.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Client talks to one rdev server. It is safe for concurrent use.
type Client struct {
	err       error // a bad base URL, returned by every call
	base      string
	key       string
	hc        *http.Client
	streams   *http.Client // hc for event streams: see streamClient
	userAgent string
}

// Option configures a Client.
type Option func(*Client)

// WithAPIKey sends key as 'Authorization: Bearer <key>' on every request.
func WithAPIKey(key string) Option { return func(c *Client) { c.key = key } }

// WithHTTPClient sends requests with hc instead of http.DefaultClient.
// Give it no overall Timeout if the client follows streams: those run as
// long as their jobs; bound each call with its context instead.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// New returns a client for the server at baseURL (scheme and host, e.g.
// "http://127.0.0.1:8080"; the API's /v1 paths are appended). A base URL
// that is not http(s)://host[:port] is the error of every call.
func New(baseURL string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), hc: http.DefaultClient, userAgent: "rdev-go-client"}
	if u, err := url.Parse(baseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.err = fmt.Errorf("client: base URL %q must be http(s)://host[:port]", baseURL)
	}
	for _, o := range opts {
		o(c)
	}
	c.streams = streamClient(c.hc)
	return c
}

// streamClient is hc for event streams, on connections of their own when
// its transport is an *http.Transport (the default): the server keeps a
// stream's connection to itself and closes it at the stream's end, so a
// stream that took the pooled connection would leave the next call to
// dial, and handshake, again — a submit then follow per job would pay a
// handshake on every submit. A stream's own dial overlaps with its job.
// Any other RoundTripper is used as it is.
func streamClient(hc *http.Client) *http.Client {
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	tr, ok := rt.(*http.Transport)
	if !ok {
		return hc
	}
	s := *hc
	s.Transport = tr.Clone()
	return &s
}

// Error is the API's refusal of a request: its HTTP status and the
// {"error":{"code","message"}} body. Use errors.As to read it.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is the API's machine-readable code, e.g. "job_not_found".
	Code string
	// Message says what was wrong, for people.
	Message string
	// RetryAfter is the server's Retry-After, or 0 when it sent none.
	RetryAfter time.Duration
	// Items are the items of a refused atomic batch (code batch_refused).
	Items []contracts.BatchItemResult
}

func (e *Error) Error() string {
	return fmt.Sprintf("rdev: %d %s: %s", e.Status, e.Code, e.Message)
}

// IsCode reports whether err is an *Error with code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// readError turns a reply that is not the expected success into an
// *Error; a body that is not rdev's error body keeps the status text.
func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: http.StatusText(resp.StatusCode)}
	var body struct {
		Error *contracts.ErrorDetail      `json:"error"`
		Items []contracts.BatchItemResult `json:"items"`
	}
	if json.Unmarshal(b, &body) == nil && body.Error != nil {
		e.Code, e.Message, e.Items = body.Error.Code, body.Error.Message, body.Items
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// request is one call: its method, path (with query) and body.
type request struct {
	method, path string
	body         any    // marshalled as JSON, unless raw is set
	raw          []byte // sent as it is, with contentType
	contentType  string
	header       http.Header
	ok           []int // the success statuses; 200 when empty
}

// do sends r, decodes a success reply into out (nil: discarded) and
// returns its status. A reply of another status is an *Error.
func (c *Client) do(ctx context.Context, r request, out any) (int, error) {
	var body io.Reader
	ct := r.contentType
	switch {
	case r.raw != nil:
		body = bytes.NewReader(r.raw)
	case r.body != nil:
		b, err := json.Marshal(r.body)
		if err != nil {
			return 0, fmt.Errorf("encode %s %s: %w", r.method, r.path, err)
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	req, err := c.newRequest(ctx, r.method, c.base+r.path, body)
	if err != nil {
		return 0, err
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	defer resp.Body.Close()
	ok := r.ok
	if len(ok) == 0 {
		ok = []int{http.StatusOK}
	}
	if !slices.Contains(ok, resp.StatusCode) {
		return resp.StatusCode, readError(resp)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode reply of %s %s: %w", r.method, r.path, err)
		}
	}
	return resp.StatusCode, nil
}

func (c *Client) newRequest(ctx context.Context, method, url string, body io.Reader) (*http.Request, error) {
	if c.err != nil {
		return nil, c.err
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	req.Header.Set("User-Agent", c.userAgent)
	return req, nil
}

// esc escapes one path segment.
func esc(s string) string { return url.PathEscape(s) }
