package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// CreateProject creates a project (POST /v1/projects, admin).
func (c *Client) CreateProject(ctx context.Context, req contracts.ProjectRequest) (contracts.Project, error) {
	var out contracts.Project
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/projects", body: req, ok: []int{http.StatusCreated}}, &out)
	return out, err
}

// Projects lists the projects the key may see (GET /v1/projects).
func (c *Client) Projects(ctx context.Context) ([]contracts.Project, error) {
	var out contracts.ProjectList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/projects"}, &out)
	return out.Projects, err
}

// Project returns a project (GET /v1/projects/{project}).
func (c *Client) Project(ctx context.Context, id string) (contracts.Project, error) {
	var out contracts.Project
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/projects/" + esc(id)}, &out)
	return out, err
}

// UpdateProject changes the fields patch sets (PATCH
// /v1/projects/{project}, admin).
func (c *Client) UpdateProject(ctx context.Context, id string, patch contracts.ProjectPatch) (contracts.Project, error) {
	var out contracts.Project
	_, err := c.do(ctx, request{method: http.MethodPatch, path: "/v1/projects/" + esc(id), body: patch}, &out)
	return out, err
}

// DeleteProject deletes a project and cancels its jobs (DELETE
// /v1/projects/{project}, admin).
func (c *Client) DeleteProject(ctx context.Context, id string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/projects/" + esc(id), ok: []int{http.StatusNoContent}}, nil)
	return err
}

// CreateKey creates an API key (POST /v1/keys, admin); the reply's Key is
// its secret, shown this once.
func (c *Client) CreateKey(ctx context.Context, req contracts.KeyRequest) (contracts.Key, error) {
	var out contracts.Key
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/keys", body: req, ok: []int{http.StatusCreated}}, &out)
	return out, err
}

// Keys lists every key (GET /v1/keys, admin).
func (c *Client) Keys(ctx context.Context) ([]contracts.Key, error) {
	var out contracts.KeyList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/keys"}, &out)
	return out.Keys, err
}

// Key returns a key (GET /v1/keys/{id}, admin).
func (c *Client) Key(ctx context.Context, id string) (contracts.Key, error) {
	var out contracts.Key
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/keys/" + esc(id)}, &out)
	return out, err
}

// RevokeKey revokes a key (DELETE /v1/keys/{id}, admin).
func (c *Client) RevokeKey(ctx context.Context, id string) (contracts.Key, error) {
	var out contracts.Key
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/keys/" + esc(id)}, &out)
	return out, err
}

// PutSecret sets a project secret (PUT
// /v1/projects/{project}/secrets/{name}, admin) and reports whether it
// is new.
func (c *Client) PutSecret(ctx context.Context, project, name, value string) (created bool, err error) {
	status, err := c.do(ctx, request{method: http.MethodPut, path: "/v1/projects/" + esc(project) + "/secrets/" + esc(name),
		body: contracts.SecretRequest{Value: &value}, ok: []int{http.StatusCreated, http.StatusNoContent}}, nil)
	return err == nil && status == http.StatusCreated, err
}

// Secrets lists a project's secrets, without values (GET
// /v1/projects/{project}/secrets, admin).
func (c *Client) Secrets(ctx context.Context, project string) ([]contracts.SecretInfo, error) {
	var out contracts.SecretList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/projects/" + esc(project) + "/secrets"}, &out)
	return out.Secrets, err
}

// DeleteSecret removes a project secret (DELETE
// /v1/projects/{project}/secrets/{name}, admin).
func (c *Client) DeleteSecret(ctx context.Context, project, name string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/projects/" + esc(project) + "/secrets/" + esc(name),
		ok: []int{http.StatusNoContent}}, nil)
	return err
}

// AuditQuery selects audit records; zero fields select everything.
type AuditQuery struct {
	// Project selects one project's records (GET /v1/audit only).
	Project string
	Actor   string
	Kind    contracts.AuditKind
	Since   time.Time
	Until   time.Time
	Page
}

func (q AuditQuery) values() url.Values {
	v := q.query(url.Values{})
	for name, s := range map[string]string{"project": q.Project, "actor": q.Actor, "kind": string(q.Kind)} {
		if s != "" {
			v.Set(name, s)
		}
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339))
	}
	return v
}

// Audit reads the audit log, oldest first (GET /v1/audit, admin).
func (c *Client) Audit(ctx context.Context, q AuditQuery) (contracts.AuditPage, error) {
	var out contracts.AuditPage
	_, err := c.do(ctx, request{method: http.MethodGet, path: withQuery("/v1/audit", q.values())}, &out)
	return out, err
}

// ProjectAudit reads one project's audit log (GET
// /v1/projects/{project}/audit, read access); q.Project is ignored.
func (c *Client) ProjectAudit(ctx context.Context, project string, q AuditQuery) (contracts.AuditPage, error) {
	q.Project = ""
	var out contracts.AuditPage
	_, err := c.do(ctx, request{method: http.MethodGet, path: withQuery("/v1/projects/"+esc(project)+"/audit", q.values())}, &out)
	return out, err
}

// DeadLetters lists dead letters, of project or ("") all (GET
// /v1/dead-letters, admin).
func (c *Client) DeadLetters(ctx context.Context, project string, p Page) (contracts.DeadLetterPage, error) {
	q := p.query(url.Values{})
	if project != "" {
		q.Set("project", project)
	}
	var out contracts.DeadLetterPage
	_, err := c.do(ctx, request{method: http.MethodGet, path: withQuery("/v1/dead-letters", q)}, &out)
	return out, err
}

// RetryDeadLetter runs a dead letter's job again as a new job (POST
// /v1/dead-letters/{id}/retry, admin). One already retried is an *Error
// with code dead_letter_retried unless force is set.
func (c *Client) RetryDeadLetter(ctx context.Context, id string, force bool) (contracts.SubmitResponse, error) {
	var out contracts.SubmitResponse
	path := "/v1/dead-letters/" + esc(id) + "/retry"
	if force {
		path += "?force=" + strconv.FormatBool(force)
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: path, ok: []int{http.StatusAccepted}}, &out)
	return out, err
}

// DeleteDeadLetter removes a dead letter (DELETE /v1/dead-letters/{id},
// admin).
func (c *Client) DeleteDeadLetter(ctx context.Context, id string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/dead-letters/" + esc(id), ok: []int{http.StatusNoContent}}, nil)
	return err
}

// RetryProjectDeadLetters runs every dead letter of project not retried
// yet again (POST /v1/projects/{project}/dead-letters/retry, admin).
func (c *Client) RetryProjectDeadLetters(ctx context.Context, project string) (contracts.DeadLetterRetryAll, error) {
	var out contracts.DeadLetterRetryAll
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/projects/" + esc(project) + "/dead-letters/retry"}, &out)
	return out, err
}

// PurgeDeadLetters removes every dead letter of project (DELETE
// /v1/projects/{project}/dead-letters, admin).
func (c *Client) PurgeDeadLetters(ctx context.Context, project string) (contracts.DeadLetterPurge, error) {
	var out contracts.DeadLetterPurge
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/projects/" + esc(project) + "/dead-letters"}, &out)
	return out, err
}
