// Package schedules holds the API's rules for cron schedules: what a valid
// schedule is, when its runs are due, and how each scheduled time becomes
// exactly one job however many API replicas sweep the schedules at once.
package schedules

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
)

// Error is a mistake of the caller's (access.Error, translated by
// accesshttp).
type Error = access.Error

func invalid(code, msg string) *Error {
	return &Error{Kind: access.KindInvalid, Code: code, Message: msg}
}

// Store keeps schedules by compare-and-set.
type Store interface {
	// Create stores a new schedule.
	Create(ctx context.Context, s contracts.Schedule) error
	// Get returns a schedule and its revision, or ErrNotFound.
	Get(ctx context.Context, project, id string) (contracts.Schedule, uint64, error)
	// List returns the schedules of project, or of every project for "",
	// with their revisions.
	List(ctx context.Context, project string) ([]contracts.Schedule, []uint64, error)
	// Update replaces a schedule if it is still at revision rev, else
	// returns ErrConflict.
	Update(ctx context.Context, s contracts.Schedule, rev uint64) error
	// Delete removes a schedule.
	Delete(ctx context.Context, project, id string) error
}

// ErrNotFound is returned by Store.Get for an unknown schedule.
var ErrNotFound = errors.New("schedule not found")

// ErrConflict is returned by Store.Update when the schedule changed since
// it was read.
var ErrConflict = errors.New("schedule changed")

// Jobs submits the runs' jobs and reads their states.
type Jobs interface {
	Submit(ctx context.Context, sub jobs.Submission) (contracts.JobState, bool, error)
	Check(ctx context.Context, sub jobs.Submission) error
	Job(ctx context.Context, id string) (contracts.JobState, error)
	Cancel(ctx context.Context, id string) (contracts.JobState, error)
}

// Access tells whether a schedule's project still exists (a deleted
// project's schedules are deleted when next due) and whether the key that
// created it may still submit there (its runs are refused otherwise).
type Access interface {
	Project(ctx context.Context, id string) (access.Project, error)
	Key(ctx context.Context, id string) (access.Key, error)
}

// Audit records the acts on schedules.
type Audit interface {
	RecordAsync(rec contracts.AuditRecord)
}

// Observer is told what the scheduler did, for metrics.
type Observer interface {
	// Swept: a sweep saw this many schedules.
	Swept(ctx context.Context, schedules int)
	// Fired: a run's job was queued lag after its scheduled time.
	Fired(ctx context.Context, lag time.Duration)
	// Skipped: a run was skipped (overlap) or missed (catch_up).
	Skipped(ctx context.Context, outcome string)
}

// keepRuns is how many runs a schedule remembers.
const keepRuns = 20

// nextRuns is how many next times a reply lists.
const nextRuns = 5

// Service manages schedules and fires their runs.
type Service struct {
	store    Store
	jobs     Jobs
	access   Access
	audit    Audit
	observer Observer
	newID    func() string
	now      func() time.Time
}

// New returns a Service; now is its clock (time.Now but in tests).
func New(store Store, j Jobs, acc Access, audit Audit, observer Observer, newID func() string, now func() time.Time) *Service {
	return &Service{store: store, jobs: j, access: acc, audit: audit, observer: observer, newID: newID, now: now}
}

// Actor is who acts on a schedule: an API key id and its address.
type Actor struct{ KeyID, ClientIP string }

// Create validates req and stores a new schedule of project.
func (s *Service) Create(ctx context.Context, by Actor, project access.Project, req contracts.ScheduleRequest) (contracts.ScheduleResponse, error) {
	now := s.now().UTC()
	sc := contracts.Schedule{V: contracts.Version, ID: s.newID(), Project: project.ID, ProjectIncarnation: project.Incarnation,
		Name: req.Name, Cron: req.Cron, Timezone: req.Timezone, Overlap: req.Overlap, CatchUp: req.CatchUp,
		Paused: req.Paused, Actor: by.KeyID, CreatedAt: now, UpdatedAt: now}
	if req.Job == nil {
		return contracts.ScheduleResponse{}, invalid("invalid_job", "job is required: the submit body each run sends, e.g. {\"command\":[\"make\",\"nightly\"]}")
	}
	sc.Job = *req.Job
	spec, err := s.check(ctx, &sc)
	if err != nil {
		return contracts.ScheduleResponse{}, err
	}
	sc.Next = spec.Next(now)
	if err := s.store.Create(ctx, sc); err != nil {
		return contracts.ScheduleResponse{}, fmt.Errorf("store schedule: %w: %w", jobs.ErrUnavailable, err)
	}
	s.record(contracts.AuditScheduleCreated, by, sc, map[string]any{"name": sc.Name, "cron": sc.Cron, "timezone": sc.Timezone})
	return s.response(ctx, sc, spec), nil
}

// check validates sc (defaults applied) and returns its parsed spec.
func (s *Service) check(ctx context.Context, sc *contracts.Schedule) (Spec, error) {
	if sc.Overlap == "" {
		sc.Overlap = contracts.OverlapAllow
	}
	if sc.CatchUp == "" {
		sc.CatchUp = contracts.CatchUpNone
	}
	switch {
	case sc.Name == "" || utf8.RuneCountInString(sc.Name) > 100 || strings.IndexFunc(sc.Name, unicode.IsControl) >= 0:
		return Spec{}, invalid("invalid_name", "name must be 1 to 100 characters without control characters")
	case !slices.Contains([]string{contracts.OverlapAllow, contracts.OverlapSkip, contracts.OverlapCancelPrevious}, sc.Overlap):
		return Spec{}, invalid("invalid_overlap", "overlap must be allow, skip or cancel_previous")
	case !slices.Contains([]string{contracts.CatchUpNone, contracts.CatchUpOne, contracts.CatchUpAll}, sc.CatchUp):
		return Spec{}, invalid("invalid_catch_up", "catch_up must be none, one or all")
	}
	spec, err := Parse(sc.Cron, sc.Timezone)
	if err != nil {
		return Spec{}, err
	}
	sub, err := submission(*sc)
	if err != nil {
		return Spec{}, err
	}
	if sub.RunAt != "" || sub.RunInSeconds != 0 || sub.Deadline != "" || sub.IdempotencyKey != "" {
		return Spec{}, invalid("invalid_job", "a scheduled job takes no run_at, run_in_seconds, deadline or idempotency_key: the schedule decides when it runs, once per time")
	}
	if err := s.jobs.Check(ctx, sub); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

// submission is the submit of one run of sc.
func submission(sc contracts.Schedule) (jobs.Submission, error) {
	it := sc.Job
	sub := jobs.Submission{Kind: contracts.KindExec, Command: it.Command}
	switch {
	case it.Prompt != "" && it.Command != nil:
		return sub, invalid("invalid_job", "a scheduled job has either a command or a prompt, not both")
	case it.Prompt != "":
		sub = jobs.Submission{Kind: contracts.KindClaude, Prompt: it.Prompt, Claude: it.ClaudeOptions}
	}
	o := it.SubmitOptions
	sub.Project, sub.ProjectIncarnation, sub.Actor, sub.CanRead = sc.Project, sc.ProjectIncarnation, sc.Actor, true
	sub.WorkDir, sub.Priority, sub.TimeoutSeconds, sub.IdempotencyKey = o.WorkDir, o.Priority, o.TimeoutSeconds, o.IdempotencyKey
	sub.MaxAttempts, sub.RetryOnExitCodes, sub.Stderr = o.MaxAttempts, o.RetryOnExitCodes, o.Stderr
	sub.RunAt, sub.RunInSeconds, sub.Deadline = o.RunAt, o.RunInSeconds, o.Deadline
	for k, v := range o.Env {
		if v.Secret != "" {
			if sub.SecretEnv == nil {
				sub.SecretEnv = map[string]string{}
			}
			sub.SecretEnv[k] = v.Secret
			continue
		}
		if sub.Env == nil {
			sub.Env = map[string]string{}
		}
		sub.Env[k] = v.Value
	}
	return sub, nil
}

// Get returns a schedule of project with its next times and its runs'
// job statuses.
func (s *Service) Get(ctx context.Context, project access.Project, id string) (contracts.ScheduleResponse, error) {
	sc, _, err := s.load(ctx, project, id)
	if err != nil {
		return contracts.ScheduleResponse{}, err
	}
	spec, err := Parse(sc.Cron, sc.Timezone)
	if err != nil {
		return contracts.ScheduleResponse{}, err
	}
	return s.response(ctx, sc, spec), nil
}

// List returns the schedules of project, oldest first.
func (s *Service) List(ctx context.Context, project access.Project) (contracts.ScheduleList, error) {
	all, _, err := s.store.List(ctx, project.ID)
	if err != nil {
		return contracts.ScheduleList{}, fmt.Errorf("list schedules: %w: %w", jobs.ErrUnavailable, err)
	}
	out := contracts.ScheduleList{Schedules: []contracts.ScheduleResponse{}}
	for _, sc := range all {
		if sc.ProjectIncarnation != project.Incarnation {
			continue
		}
		spec, err := Parse(sc.Cron, sc.Timezone)
		if err != nil {
			continue
		}
		out.Schedules = append(out.Schedules, s.response(ctx, sc, spec))
	}
	slices.SortFunc(out.Schedules, func(a, b contracts.ScheduleResponse) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Update applies patch to a schedule of project.
func (s *Service) Update(ctx context.Context, by Actor, project access.Project, id string, patch contracts.SchedulePatch) (contracts.ScheduleResponse, error) {
	for range casRounds {
		sc, rev, err := s.load(ctx, project, id)
		if err != nil {
			return contracts.ScheduleResponse{}, err
		}
		timing := patch.Cron != nil || patch.Timezone != nil || (patch.Paused != nil && !*patch.Paused && sc.Paused)
		apply(&sc, patch)
		spec, err := s.check(ctx, &sc)
		if err != nil {
			return contracts.ScheduleResponse{}, err
		}
		now := s.now().UTC()
		if timing {
			// A new expression, or a resume, counts from now: what was
			// due meanwhile is not run late.
			sc.Next = spec.Next(now)
		}
		sc.UpdatedAt = now
		err = s.store.Update(ctx, sc, rev)
		if errors.Is(err, ErrConflict) {
			continue // a run advanced it meanwhile
		}
		if err != nil {
			return contracts.ScheduleResponse{}, fmt.Errorf("store schedule: %w: %w", jobs.ErrUnavailable, err)
		}
		s.record(contracts.AuditScheduleUpdated, by, sc, patchDetail(patch))
		return s.response(ctx, sc, spec), nil
	}
	return contracts.ScheduleResponse{}, fmt.Errorf("schedule %s kept changing: %w", id, jobs.ErrUnavailable)
}

func apply(sc *contracts.Schedule, p contracts.SchedulePatch) {
	if p.Name != nil {
		sc.Name = *p.Name
	}
	if p.Cron != nil {
		sc.Cron = *p.Cron
	}
	if p.Timezone != nil {
		sc.Timezone = *p.Timezone
	}
	if p.Job != nil {
		sc.Job = *p.Job
	}
	if p.Overlap != nil {
		sc.Overlap = *p.Overlap
	}
	if p.CatchUp != nil {
		sc.CatchUp = *p.CatchUp
	}
	if p.Paused != nil {
		sc.Paused = *p.Paused
	}
}

// patchDetail names the fields a patch changed, for the audit log (the
// job's env may hold values that are not for the log).
func patchDetail(p contracts.SchedulePatch) map[string]any {
	var fields []string
	for name, set := range map[string]bool{"name": p.Name != nil, "cron": p.Cron != nil, "timezone": p.Timezone != nil,
		"job": p.Job != nil, "overlap": p.Overlap != nil, "catch_up": p.CatchUp != nil, "paused": p.Paused != nil} {
		if set {
			fields = append(fields, name)
		}
	}
	slices.Sort(fields)
	d := map[string]any{"fields": fields}
	if p.Paused != nil {
		d["paused"] = *p.Paused
	}
	return d
}

// Delete removes a schedule of project; its jobs already queued stay.
func (s *Service) Delete(ctx context.Context, by Actor, project access.Project, id string) error {
	sc, _, err := s.load(ctx, project, id)
	if err != nil {
		return err
	}
	if err := s.store.Delete(ctx, project.ID, id); err != nil {
		return fmt.Errorf("delete schedule: %w: %w", jobs.ErrUnavailable, err)
	}
	s.record(contracts.AuditScheduleDeleted, by, sc, map[string]any{"name": sc.Name})
	return nil
}

// Trigger runs a schedule now, outside its times (paused or not), and
// returns the run.
func (s *Service) Trigger(ctx context.Context, by Actor, project access.Project, id string) (contracts.ScheduleRun, error) {
	sc, _, err := s.load(ctx, project, id)
	if err != nil {
		return contracts.ScheduleRun{}, err
	}
	run, err := s.run(ctx, sc, s.now().UTC().Truncate(time.Second), true)
	if err != nil {
		return contracts.ScheduleRun{}, err
	}
	s.rememberRun(ctx, project, id, run)
	s.record(contracts.AuditScheduleTriggered, by, sc, map[string]any{"job_id": run.JobID})
	return run, nil
}

// casRounds bounds the compare-and-set retries of one change.
const casRounds = 8

// rememberRun adds a manual run to the schedule's runs, as far as it can:
// the run's job is queued whatever becomes of the record (a schedule
// deleted meanwhile has no runs to keep).
func (s *Service) rememberRun(ctx context.Context, project access.Project, id string, run contracts.ScheduleRun) {
	for range casRounds {
		cur, rev, err := s.load(ctx, project, id)
		if err != nil {
			return
		}
		cur.Runs = remember(cur.Runs, run)
		if err := s.store.Update(ctx, cur, rev); !errors.Is(err, ErrConflict) {
			return
		}
	}
}

// load reads a schedule of project's incarnation (one of a project
// deleted and created again is not found).
func (s *Service) load(ctx context.Context, project access.Project, id string) (contracts.Schedule, uint64, error) {
	if !contracts.ValidID(id) {
		return contracts.Schedule{}, 0, invalid("invalid_schedule_id", "schedule id must be 1 to 64 letters, digits, '_' or '-'")
	}
	sc, rev, err := s.store.Get(ctx, project.ID, id)
	if errors.Is(err, ErrNotFound) || (err == nil && sc.ProjectIncarnation != project.Incarnation) {
		return sc, 0, &Error{Kind: access.KindNotFound, Code: "schedule_not_found", Message: fmt.Sprintf("project %q has no schedule %q", project.ID, id)}
	}
	if err != nil {
		return sc, 0, fmt.Errorf("load schedule %s: %w: %w", id, jobs.ErrUnavailable, err)
	}
	return sc, rev, nil
}

// response adds the next times and the runs' job statuses to sc, with
// its job's plain env values redacted: they are kept for the runs, but a
// key that may read the project is not shown what the submitter set.
func (s *Service) response(ctx context.Context, sc contracts.Schedule, spec Spec) contracts.ScheduleResponse {
	sc.Job.Env = redactEnv(sc.Job.Env)
	r := contracts.ScheduleResponse{Schedule: sc, NextRuns: []time.Time{}}
	if !sc.Paused {
		for t, i := sc.Next, 0; i < nextRuns && !t.IsZero(); t, i = spec.Next(t), i+1 {
			r.NextRuns = append(r.NextRuns, t)
		}
	}
	r.Runs = slices.Clone(sc.Runs)
	for i := range r.Runs {
		if r.Runs[i].JobID == "" {
			continue
		}
		if st, err := s.jobs.Job(ctx, r.Runs[i].JobID); err == nil {
			r.Runs[i].Status = st.Status
		}
	}
	return r
}

// redactEnv returns env with every plain value replaced by
// contracts.Redacted; a secret reference is a name and stays.
func redactEnv(env map[string]contracts.EnvValue) map[string]contracts.EnvValue {
	if env == nil {
		return nil
	}
	out := make(map[string]contracts.EnvValue, len(env))
	for k, v := range env {
		if v.Secret == "" {
			v.Value = contracts.Redacted
		}
		out[k] = v
	}
	return out
}

func (s *Service) record(kind contracts.AuditKind, by Actor, sc contracts.Schedule, detail map[string]any) {
	detail["schedule_id"] = sc.ID
	s.audit.RecordAsync(contracts.AuditRecord{Kind: kind, Actor: by.KeyID, ClientIP: by.ClientIP, Project: sc.Project,
		ProjectIncarnation: sc.ProjectIncarnation, Detail: detail})
}

// remember appends run to runs, keeping the last keepRuns.
func remember(runs []contracts.ScheduleRun, run ...contracts.ScheduleRun) []contracts.ScheduleRun {
	runs = append(runs, run...)
	if len(runs) > keepRuns {
		runs = slices.Clone(runs[len(runs)-keepRuns:])
	}
	return runs
}
