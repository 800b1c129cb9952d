package contracts

import "time"

// ScheduleKey is the BucketQueues key of a project's cron Schedule: the
// bucket of queue settings that outlive restarts and keeps no TTL.
func ScheduleKey(project, id string) string { return "schedule." + project + "." + id }

// ScheduleKeys matches the keys of every Schedule, of every project.
const ScheduleKeys = "schedule.>"

// The overlap policies of a Schedule: what a run does while the job of
// the run before it has not ended.
const (
	// OverlapAllow queues the run anyway (the default).
	OverlapAllow = "allow"
	// OverlapSkip skips the run (recorded with outcome skipped).
	OverlapSkip = "skip"
	// OverlapCancelPrevious cancels the previous run's job, then queues.
	OverlapCancelPrevious = "cancel_previous"
)

// The catch-up policies of a Schedule: which of the times missed while
// no API replica ran (more than ScheduleLateAfter late) are fired.
const (
	// CatchUpNone fires none of them (the default).
	CatchUpNone = "none"
	// CatchUpOne fires the latest of them, once.
	CatchUpOne = "one"
	// CatchUpAll fires every one of them (at most ScheduleMaxCatchUp per
	// pass, in order).
	CatchUpAll = "all"
)

// ScheduleLateAfter is how late a scheduled time may be fired and still
// count as on time: later than that, it was missed and CatchUp decides.
const ScheduleLateAfter = time.Minute

// ScheduleMaxCatchUp bounds the times one pass of the scheduler fires for
// one schedule.
const ScheduleMaxCatchUp = 100

// The outcomes of a ScheduleRun.
const (
	// RunQueued: the run's job was submitted.
	RunQueued = "queued"
	// RunSkipped: the previous run's job had not ended (overlap skip).
	RunSkipped = "skipped"
	// RunMissed: the time passed while no scheduler ran (catch_up).
	RunMissed = "missed"
	// RunRefused: the job was refused (e.g. a secret it names was
	// deleted); Message says why.
	RunRefused = "refused"
)

// ScheduleRequest is the body of POST /v1/projects/{project}/schedules.
type ScheduleRequest struct {
	// Name is a label for people, 1 to 100 characters.
	Name string `json:"name"`
	// Cron is a standard 5-field expression (minute hour day-of-month
	// month day-of-week) or a macro: @yearly, @monthly, @weekly, @daily,
	// @hourly.
	Cron string `json:"cron"`
	// Timezone is the IANA zone the expression is read in; "" is UTC.
	Timezone string `json:"timezone,omitempty"`
	// Job is what each run submits: a command or a prompt, as a batch item.
	Job *BatchItem `json:"job"`
	// Overlap is allow (default), skip or cancel_previous.
	Overlap string `json:"overlap,omitempty"`
	// CatchUp is none (default), one or all.
	CatchUp string `json:"catch_up,omitempty"`
	// Paused creates the schedule paused: it fires nothing until resumed.
	Paused bool `json:"paused,omitempty"`
}

// SchedulePatch is the body of PATCH /v1/schedules/…: the fields given
// replace the schedule's.
type SchedulePatch struct {
	// Name replaces the name.
	Name *string `json:"name,omitempty"`
	// Cron replaces the expression; the next time is computed again.
	Cron *string `json:"cron,omitempty"`
	// Timezone replaces the zone; the next time is computed again.
	Timezone *string `json:"timezone,omitempty"`
	// Job replaces what each run submits.
	Job *BatchItem `json:"job,omitempty"`
	// Overlap replaces the overlap policy.
	Overlap *string `json:"overlap,omitempty"`
	// CatchUp replaces the catch-up policy.
	CatchUp *string `json:"catch_up,omitempty"`
	// Paused pauses or resumes the schedule.
	Paused *bool `json:"paused,omitempty"`
}

// Schedule is a cron schedule of a project, stored in BucketQueues under
// ScheduleKey. Each run submits Job as a job whose id is derived from
// the schedule and the scheduled time (ScheduleJobID), so a time is fired
// once however many schedulers see it.
type Schedule struct {
	// V is the message version (Version).
	V int `json:"v"`
	// ID identifies the schedule.
	ID string `json:"id"`
	// Project is the project whose jobs it submits.
	Project string `json:"project"`
	// ProjectIncarnation is the project's incarnation when the schedule
	// was created; a project created again does not inherit it.
	ProjectIncarnation string `json:"project_incarnation,omitempty"`
	// Name is a label for people.
	Name string `json:"name"`
	// Cron is the expression (see ScheduleRequest.Cron).
	Cron string `json:"cron"`
	// Timezone is the IANA zone of Cron; "" is UTC.
	Timezone string `json:"timezone,omitempty"`
	// Job is what each run submits. Answers of the API show its plain env
	// values as Redacted (secret references as they are); the stored
	// schedule keeps them for its runs.
	Job BatchItem `json:"job"`
	// Overlap is the overlap policy (Overlap constants).
	Overlap string `json:"overlap"`
	// CatchUp is the catch-up policy (CatchUp constants).
	CatchUp string `json:"catch_up"`
	// Paused is set while the schedule fires nothing.
	Paused bool `json:"paused"`
	// Next is the next scheduled time not yet handled.
	Next time.Time `json:"next"`
	// Runs are the last runs, oldest first (at most 20).
	Runs []ScheduleRun `json:"runs,omitempty"`
	// Actor is the API key that created the schedule; its runs are
	// submitted (and audited) as that key.
	Actor string `json:"actor,omitempty"`
	// CreatedAt and UpdatedAt are when it was created and last changed
	// by someone (not by its runs).
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ScheduleRun is one scheduled time of a Schedule and what became of it.
type ScheduleRun struct {
	// ScheduledAt is the time the run was for.
	ScheduledAt time.Time `json:"scheduled_at"`
	// JobID is the run's job, for outcome queued.
	JobID string `json:"job_id,omitempty"`
	// Outcome is queued, skipped, missed or refused (Run constants).
	Outcome string `json:"outcome"`
	// Message says why a run was refused.
	Message string `json:"message,omitempty"`
	// Manual is set on a run someone triggered (POST …/trigger).
	Manual bool `json:"manual,omitempty"`
	// Status is the job's status when the schedule was read (replies
	// only, not stored).
	Status Status `json:"status,omitempty"`
}

// ScheduleResponse is a Schedule as the API serves it, with its next
// times.
type ScheduleResponse struct {
	Schedule
	// NextRuns are the next 5 scheduled times (none while paused).
	NextRuns []time.Time `json:"next_runs"`
}

// ScheduleList is the body of GET /v1/projects/{project}/schedules.
type ScheduleList struct {
	// Schedules are the project's schedules, oldest first.
	Schedules []ScheduleResponse `json:"schedules"`
}

// ScheduleJobID is the id of the job a schedule's run at t submits: one
// id per (schedule, time), so JetStream's message id and the job state's
// create-once make a second firing of the same time a no-op. A manual
// run (trigger) is marked m, so it is not taken for the scheduled one.
func ScheduleJobID(scheduleID string, t time.Time, manual bool) string {
	mark := "-"
	if manual {
		mark = "-m"
	}
	return "sch-" + scheduleID + mark + t.UTC().Format("20060102T150405Z")
}
