package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// JobFilter selects the jobs of a listing; zero fields select everything.
type JobFilter struct {
	Status   contracts.Status
	Priority contracts.Priority
	Kind     contracts.Kind
	// BatchID keeps the jobs of one batch.
	BatchID string
	// Since and Until bound the submission time (inclusive; sent to the
	// second).
	Since, Until time.Time
}

func (f JobFilter) query(q url.Values) url.Values {
	for k, v := range map[string]string{"status": string(f.Status), "priority": string(f.Priority), "kind": string(f.Kind), "batch": f.BatchID} {
		if v != "" {
			q.Set(k, v)
		}
	}
	for k, t := range map[string]time.Time{"since": f.Since, "until": f.Until} {
		if !t.IsZero() {
			q.Set(k, t.UTC().Format(time.RFC3339))
		}
	}
	return q
}

// ListJobs returns one page of project's jobs, newest first (GET
// /v1/projects/{project}/jobs); Page.Limit 0 is the server's 50.
func (c *Client) ListJobs(ctx context.Context, project string, f JobFilter, p Page) (contracts.JobList, error) {
	var out contracts.JobList
	path := withQuery("/v1/projects/"+esc(project)+"/jobs", p.query(f.query(url.Values{})))
	_, err := c.do(ctx, request{method: http.MethodGet, path: path}, &out)
	return out, err
}

// ListAllJobs returns one page of the jobs of every project the key may
// read, newest first (GET /v1/jobs); project, when set, keeps one.
func (c *Client) ListAllJobs(ctx context.Context, project string, f JobFilter, p Page) (contracts.JobList, error) {
	var out contracts.JobList
	q := f.query(url.Values{})
	if project != "" {
		q.Set("project", project)
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: withQuery("/v1/jobs", p.query(q))}, &out)
	return out, err
}

// LogsOptions shape a job's logs.
type LogsOptions struct {
	// FD keeps one of stdout and stderr; "" keeps both, interleaved.
	FD contracts.FD
	// Attempt keeps one attempt's lines (from 1); 0 keeps all.
	Attempt int
	// Since keeps the lines read at or after it; zero keeps all.
	Since time.Time
	// Timestamps prefixes each line with the time it was read (RFC 3339).
	Timestamps bool
	// Follow keeps the body open until the job ends, carrying each line
	// as it is stored.
	Follow bool
	// StripANSI removes terminal escape sequences (colours and the like).
	StripANSI bool
}

// Logs returns a job's output as plain text, one line per line printed
// (GET /v1/jobs/{id}/logs). Close the reader when done; with Follow it
// ends when the job does, or with ctx.
func (c *Client) Logs(ctx context.Context, id string, o LogsOptions) (io.ReadCloser, error) {
	q := url.Values{}
	if o.FD != "" {
		q.Set("fd", string(o.FD))
	}
	if o.Attempt > 0 {
		q.Set("attempt", strconv.Itoa(o.Attempt))
	}
	if !o.Since.IsZero() {
		q.Set("since", o.Since.UTC().Format(time.RFC3339Nano))
	}
	for k, on := range map[string]bool{"timestamps": o.Timestamps, "follow": o.Follow, "strip_ansi": o.StripANSI} {
		if on {
			q.Set(k, "true")
		}
	}
	path := withQuery("/v1/jobs/"+esc(id)+"/logs", q)
	req, err := c.newRequest(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp.Body, nil
}

// Queues returns each priority level's waiting and running jobs, oldest
// wait and dispatches in the last minute, highest first (GET /v1/queues,
// admin).
func (c *Client) Queues(ctx context.Context) (contracts.QueueList, error) {
	var out contracts.QueueList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/queues"}, &out)
	return out, err
}

// PauseQueue stops the workers dispatching a priority level; its jobs
// wait, and the pause outlives restarts (POST /v1/queues/{priority}/pause,
// admin).
func (c *Client) PauseQueue(ctx context.Context, p contracts.Priority) (contracts.QueuePause, error) {
	return c.setPause(ctx, p, "pause")
}

// ResumeQueue lets the workers dispatch a paused level again (POST
// /v1/queues/{priority}/resume, admin).
func (c *Client) ResumeQueue(ctx context.Context, p contracts.Priority) (contracts.QueuePause, error) {
	return c.setPause(ctx, p, "resume")
}

func (c *Client) setPause(ctx context.Context, p contracts.Priority, verb string) (contracts.QueuePause, error) {
	var out contracts.QueuePause
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/queues/" + esc(string(p)) + "/" + verb}, &out)
	return out, err
}

// NATSCredentials asks for a short-lived NATS credential of a project
// (POST /v1/projects/{project}/nats-credentials): a token to connect with
// and the inbox prefix to use, allowed to read the project's output and
// events straight from NATS until it expires.
func (c *Client) NATSCredentials(ctx context.Context, project string) (contracts.NATSCredentials, error) {
	var out contracts.NATSCredentials
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/projects/" + url.PathEscape(project) + "/nats-credentials", ok: []int{http.StatusCreated}}, &out)
	return out, err
}
