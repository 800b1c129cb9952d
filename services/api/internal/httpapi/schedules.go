package httpapi

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/schedules"
)

// Schedules keeps projects' cron schedules (schedules.Service).
type Schedules interface {
	Create(ctx context.Context, by schedules.Actor, project access.Project, req contracts.ScheduleRequest) (contracts.ScheduleResponse, error)
	Get(ctx context.Context, project access.Project, id string) (contracts.ScheduleResponse, error)
	List(ctx context.Context, project access.Project) (contracts.ScheduleList, error)
	Update(ctx context.Context, by schedules.Actor, project access.Project, id string, patch contracts.SchedulePatch) (contracts.ScheduleResponse, error)
	Delete(ctx context.Context, by schedules.Actor, project access.Project, id string) error
	Trigger(ctx context.Context, by schedules.Actor, project access.Project, id string) (contracts.ScheduleRun, error)
}

func scheduleActor(c echo.Context) schedules.Actor {
	return schedules.Actor{KeyID: principal(c).Key.ID, ClientIP: accesshttp.ClientIP(c).String()}
}

// createSchedule answers POST /v1/projects/{project}/schedules.
func (h *Handlers) createSchedule(c echo.Context) error {
	var req contracts.ScheduleRequest
	if err := h.decode(c, &req); err != nil {
		return h.fail(c, err)
	}
	sc, err := h.schedules.Create(c.Request().Context(), scheduleActor(c), routeProject(c), req)
	if err != nil {
		return h.fail(c, err)
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/projects/"+sc.Project+"/schedules/"+sc.ID)
	return c.JSON(http.StatusCreated, sc)
}

// listSchedules answers GET /v1/projects/{project}/schedules.
func (h *Handlers) listSchedules(c echo.Context) error {
	l, err := h.schedules.List(c.Request().Context(), routeProject(c))
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusOK, l)
}

// getSchedule answers GET /v1/projects/{project}/schedules/{id}.
func (h *Handlers) getSchedule(c echo.Context) error {
	sc, err := h.schedules.Get(c.Request().Context(), routeProject(c), c.Param("schedule"))
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusOK, sc)
}

// updateSchedule answers PATCH /v1/projects/{project}/schedules/{id}.
func (h *Handlers) updateSchedule(c echo.Context) error {
	var patch contracts.SchedulePatch
	if err := h.decode(c, &patch); err != nil {
		return h.fail(c, err)
	}
	return h.patchSchedule(c, patch)
}

// pauseSchedule and resumeSchedule answer POST
// /v1/projects/{project}/schedules/{id}/pause and /resume.
func (h *Handlers) pauseSchedule(c echo.Context) error {
	paused := true
	return h.patchSchedule(c, contracts.SchedulePatch{Paused: &paused})
}

func (h *Handlers) resumeSchedule(c echo.Context) error {
	paused := false
	return h.patchSchedule(c, contracts.SchedulePatch{Paused: &paused})
}

func (h *Handlers) patchSchedule(c echo.Context, patch contracts.SchedulePatch) error {
	sc, err := h.schedules.Update(c.Request().Context(), scheduleActor(c), routeProject(c), c.Param("schedule"), patch)
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusOK, sc)
}

// deleteSchedule answers DELETE /v1/projects/{project}/schedules/{id}.
func (h *Handlers) deleteSchedule(c echo.Context) error {
	if err := h.schedules.Delete(c.Request().Context(), scheduleActor(c), routeProject(c), c.Param("schedule")); err != nil {
		return h.fail(c, err)
	}
	return c.NoContent(http.StatusNoContent)
}

// triggerSchedule answers POST /v1/projects/{project}/schedules/{id}/trigger:
// one run now, outside the schedule's times.
func (h *Handlers) triggerSchedule(c echo.Context) error {
	run, err := h.schedules.Trigger(c.Request().Context(), scheduleActor(c), routeProject(c), c.Param("schedule"))
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusAccepted, run)
}
