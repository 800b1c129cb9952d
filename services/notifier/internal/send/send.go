// Package send makes one webhook attempt: a signed POST (Standard
// Webhooks headers, signed by the specification's library) through a
// client that refuses internal addresses on every dial, follows no
// redirect, gives up after a timeout and reads only the start of the
// answer.
package send

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"code.dny.dev/ssrf"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// ErrRefused is returned (wrapped) for a target the SSRF rules refuse:
// an address that is not public and not allow-listed, or a scheme other
// than http and https.
var ErrRefused = errors.New("target refused by the SSRF rules")

// Resolver looks up the addresses of a host name.
type Resolver func(ctx context.Context, host string) ([]netip.Addr, error)

// Config sets up a Sender.
type Config struct {
	// Allow are the prefixes dialed although not public (internal
	// receivers an operator trusts).
	Allow []netip.Prefix
	// Timeout bounds one attempt, from dial to the last byte read.
	Timeout time.Duration
	// Resolve looks host names up; nil: the system resolver.
	Resolve Resolver
	// UserAgent is sent with every request.
	UserAgent string
}

// Sender sends attempts. It is safe for concurrent use.
type Sender struct {
	client  *http.Client
	timeout time.Duration
	agent   string
}

// New returns a Sender.
func New(cfg Config) *Sender {
	var v4, v6 []netip.Prefix
	for _, p := range cfg.Allow {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	// Any port: receivers listen where they like; what matters is whose
	// address it is.
	guard := ssrf.New(ssrf.WithAnyPort(), ssrf.WithAllowedV4Prefixes(v4...), ssrf.WithAllowedV6Prefixes(v6...))
	resolve := cfg.Resolve
	if resolve == nil {
		resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	// The guard checks the address actually connected to, after every
	// resolution: a name that answers differently at dial time (DNS
	// rebinding) gains nothing.
	dialer := &net.Dialer{Control: guard.Safe, Timeout: cfg.Timeout}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var ips []netip.Addr
		if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			ips = []netip.Addr{ip}
		} else if ips, err = resolve(ctx, host); err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		var errs []error
		for _, ip := range ips {
			if ip.Is4In6() {
				// An IPv4 address in IPv6 clothing hides what it reaches.
				errs = append(errs, fmt.Errorf("%w: %s is an IPv4-mapped IPv6 address", ssrf.ErrProhibitedIP, ip))
				continue
			}
			c, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			return nil, fmt.Errorf("resolve %s: no address", host)
		}
		return nil, errors.Join(errs...)
	}
	tr := &http.Transport{
		Proxy:                 nil, // a proxy would dial for us, past the guard
		DialContext:           dial,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	agent := cfg.UserAgent
	if agent == "" {
		agent = "rdev-webhooks/1"
	}
	return &Sender{timeout: cfg.Timeout, agent: agent, client: &http.Client{
		Transport: tr,
		// A 3xx is the answer: following it could lead anywhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Close closes idle connections.
func (s *Sender) Close() { s.client.CloseIdleConnections() }

// Request is one attempt to make.
type Request struct {
	URL  string
	ID   string // webhook-id
	Body []byte
	// Secrets sign the attempt, one signature each (several while a
	// rotated-out secret still signs).
	Secrets [][]byte
	// Now is the attempt's webhook-timestamp.
	Now time.Time
}

// Result is what came of an attempt.
type Result struct {
	// Sent are the request headers.
	Sent http.Header
	// Status is the response's status, 0 without a response.
	Status int
	// Header is the response's header.
	Header http.Header
	// Body is the start of the response body (contracts.WebhookResponseBodyBytes).
	Body []byte
	// RetryAfter is the response's Retry-After, 0 when absent.
	RetryAfter time.Duration
	// Latency is how long the attempt took.
	Latency time.Duration
	// Err says why there was no response; ErrRefused for a refused target.
	Err error
}

// Send makes the attempt.
func (s *Sender) Send(ctx context.Context, r Request) Result {
	start := time.Now()
	res := Result{Sent: http.Header{}}
	sigs := make([]string, 0, len(r.Secrets))
	for _, sec := range r.Secrets {
		wh, err := standardwebhooks.NewWebhookRaw(sec)
		if err != nil {
			res.Err = fmt.Errorf("sign: %w", err)
			return res
		}
		sig, err := wh.Sign(r.ID, r.Now, r.Body)
		if err != nil {
			res.Err = fmt.Errorf("sign: %w", err)
			return res
		}
		sigs = append(sigs, sig)
	}
	res.Sent.Set("Content-Type", "application/json")
	res.Sent.Set("User-Agent", s.agent)
	res.Sent.Set(standardwebhooks.HeaderWebhookID, r.ID)
	res.Sent.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(r.Now.Unix(), 10))
	res.Sent.Set(standardwebhooks.HeaderWebhookSignature, strings.Join(sigs, " "))

	if !strings.HasPrefix(r.URL, "http://") && !strings.HasPrefix(r.URL, "https://") {
		res.Err = fmt.Errorf("%w: only http and https URLs", ErrRefused)
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		res.Err = fmt.Errorf("%w: %w", ErrRefused, err)
		return res
	}
	req.Header = res.Sent.Clone()
	resp, err := s.client.Do(req)
	res.Latency = time.Since(start)
	if err != nil {
		if isRefusal(err) {
			err = fmt.Errorf("%w: %w", ErrRefused, err)
		}
		res.Err = err
		return res
	}
	defer resp.Body.Close()
	res.Status, res.Header = resp.StatusCode, resp.Header
	res.Body, _ = io.ReadAll(io.LimitReader(resp.Body, contracts.WebhookResponseBodyBytes))
	// Drain a little more so the connection can be reused; never much.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	res.Latency = time.Since(start)
	res.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), start)
	return res
}

func isRefusal(err error) bool {
	return errors.Is(err, ssrf.ErrProhibitedIP) || errors.Is(err, ssrf.ErrProhibitedNetwork) ||
		errors.Is(err, ssrf.ErrProhibitedPort) || errors.Is(err, ssrf.ErrInvalidHostPort)
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
