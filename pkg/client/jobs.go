package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// SubmitCommand queues a command in project (POST
// /v1/projects/{project}/commands).
func (c *Client) SubmitCommand(ctx context.Context, project string, req contracts.CommandRequest) (contracts.SubmitResponse, error) {
	var out contracts.SubmitResponse
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/projects/" + esc(project) + "/commands", body: req,
		ok: []int{http.StatusAccepted}}, &out)
	return out, err
}

// SubmitClaude queues a Claude prompt in project (POST
// /v1/projects/{project}/claude).
func (c *Client) SubmitClaude(ctx context.Context, project string, req contracts.ClaudeRequest) (contracts.SubmitResponse, error) {
	var out contracts.SubmitResponse
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/projects/" + esc(project) + "/claude", body: req,
		ok: []int{http.StatusAccepted}}, &out)
	return out, err
}

// SubmitBatch queues items in project as one batch (POST
// /v1/projects/{project}/batches). Refused items come back with their
// errors; an atomic batch with a refused item queues nothing and returns
// an *Error with code batch_refused and the items.
func (c *Client) SubmitBatch(ctx context.Context, project string, items []contracts.BatchItem, atomic bool) (contracts.BatchResponse, error) {
	var out contracts.BatchResponse
	path := "/v1/projects/" + esc(project) + "/batches"
	if atomic {
		path += "?atomic=true"
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: path, body: items, ok: []int{http.StatusAccepted}}, &out)
	return out, err
}

// Job returns a job's state (GET /v1/jobs/{id}).
func (c *Client) Job(ctx context.Context, id string) (contracts.JobResponse, error) {
	var out contracts.JobResponse
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/jobs/" + esc(id)}, &out)
	return out, err
}

// Cancel cancels a job (POST /v1/jobs/{id}/cancel): the reply's status is
// cancelled for a queued job, and still running while a running one is
// being stopped. A job that already ended is an *Error (409).
func (c *Client) Cancel(ctx context.Context, id string) (contracts.JobResponse, error) {
	var out contracts.JobResponse
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/jobs/" + esc(id) + "/cancel",
		ok: []int{http.StatusOK, http.StatusAccepted}}, &out)
	return out, err
}

// Retry submits a job that failed, timed out or was cancelled again, as a
// new job running the same request (POST /v1/jobs/{id}/retry), and
// returns the new job's submit reply. A job that has not ended is an
// *Error with code job_not_finished.
func (c *Client) Retry(ctx context.Context, id string) (contracts.SubmitResponse, error) {
	var out contracts.SubmitResponse
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/jobs/" + esc(id) + "/retry", ok: []int{http.StatusAccepted}}, &out)
	return out, err
}

// Page selects one page of a listing: Cursor is the NextCursor of the
// page before ("" for the first), Limit 1 to 1000 (0: the server's 100).
type Page struct {
	Cursor string
	Limit  int
}

func (p Page) query(q url.Values) url.Values {
	if p.Cursor != "" {
		q.Set("cursor", p.Cursor)
	}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	return q
}

// withQuery appends q to path when it holds anything.
func withQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// Batch returns a batch and one page of its jobs (GET /v1/batches/{id}).
func (c *Client) Batch(ctx context.Context, id string, p Page) (contracts.BatchStatus, error) {
	var out contracts.BatchStatus
	_, err := c.do(ctx, request{method: http.MethodGet, path: withQuery("/v1/batches/"+esc(id), p.query(url.Values{}))}, &out)
	return out, err
}

// CancelBatch cancels every job of a batch that has not ended (POST
// /v1/batches/{id}/cancel). A batch whose every job had ended is an
// *Error with code batch_finished.
func (c *Client) CancelBatch(ctx context.Context, id string) (contracts.BatchCancelResponse, error) {
	var out contracts.BatchCancelResponse
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/batches/" + esc(id) + "/cancel", ok: []int{http.StatusAccepted}}, &out)
	return out, err
}
