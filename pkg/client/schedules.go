package client

import (
	"context"
	"net/http"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

func schedulePath(project, id string) string {
	p := "/v1/projects/" + esc(project) + "/schedules"
	if id != "" {
		p += "/" + esc(id)
	}
	return p
}

// CreateSchedule creates a cron schedule (POST
// /v1/projects/{project}/schedules).
func (c *Client) CreateSchedule(ctx context.Context, project string, req contracts.ScheduleRequest) (contracts.ScheduleResponse, error) {
	var out contracts.ScheduleResponse
	_, err := c.do(ctx, request{method: http.MethodPost, path: schedulePath(project, ""), body: req, ok: []int{http.StatusCreated}}, &out)
	return out, err
}

// Schedules lists a project's cron schedules (GET
// /v1/projects/{project}/schedules).
func (c *Client) Schedules(ctx context.Context, project string) (contracts.ScheduleList, error) {
	var out contracts.ScheduleList
	_, err := c.do(ctx, request{method: http.MethodGet, path: schedulePath(project, "")}, &out)
	return out, err
}

// Schedule returns a cron schedule with its next and last runs (GET
// /v1/projects/{project}/schedules/{id}).
func (c *Client) Schedule(ctx context.Context, project, id string) (contracts.ScheduleResponse, error) {
	var out contracts.ScheduleResponse
	_, err := c.do(ctx, request{method: http.MethodGet, path: schedulePath(project, id)}, &out)
	return out, err
}

// DeleteSchedule deletes a cron schedule (DELETE
// /v1/projects/{project}/schedules/{id}).
func (c *Client) DeleteSchedule(ctx context.Context, project, id string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: schedulePath(project, id), ok: []int{http.StatusNoContent}}, nil)
	return err
}

// TriggerSchedule runs a cron schedule now (POST …/{id}/trigger).
func (c *Client) TriggerSchedule(ctx context.Context, project, id string) (contracts.ScheduleRun, error) {
	var out contracts.ScheduleRun
	_, err := c.do(ctx, request{method: http.MethodPost, path: schedulePath(project, id) + "/trigger", ok: []int{http.StatusAccepted}}, &out)
	return out, err
}

// PauseSchedule pauses a cron schedule (POST …/{id}/pause).
func (c *Client) PauseSchedule(ctx context.Context, project, id string) (contracts.ScheduleResponse, error) {
	var out contracts.ScheduleResponse
	_, err := c.do(ctx, request{method: http.MethodPost, path: schedulePath(project, id) + "/pause"}, &out)
	return out, err
}

// ResumeSchedule resumes a cron schedule (POST …/{id}/resume).
func (c *Client) ResumeSchedule(ctx context.Context, project, id string) (contracts.ScheduleResponse, error) {
	var out contracts.ScheduleResponse
	_, err := c.do(ctx, request{method: http.MethodPost, path: schedulePath(project, id) + "/resume"}, &out)
	return out, err
}
