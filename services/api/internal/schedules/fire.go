package schedules

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Sweep fires what is due of every schedule, as of the clock. Every API
// replica sweeps; no replica is special. A scheduled time becomes one job
// because its id is derived from (schedule, time): whoever submits it
// second gets the first's job back. The schedule's next time then moves on
// by compare-and-set, so one sweep's record of the runs wins; a sweep
// that stopped before it moves on leaves the time due, and the next sweep
// (any replica's) submits the same job id again, a no-op.
func (s *Service) Sweep(ctx context.Context) error {
	all, revs, err := s.store.List(ctx, "")
	if err != nil {
		return fmt.Errorf("list schedules: %w", err)
	}
	s.observer.Swept(ctx, len(all))
	var errs []error
	for i, sc := range all {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := s.fire(ctx, sc, revs[i]); err != nil {
			errs = append(errs, fmt.Errorf("schedule %s: %w", sc.ID, err))
		}
	}
	return errors.Join(errs...)
}

// fire handles the due times of one schedule.
func (s *Service) fire(ctx context.Context, sc contracts.Schedule, rev uint64) error {
	now := s.now().UTC()
	if sc.Paused || sc.Next.IsZero() || sc.Next.After(now) {
		return nil
	}
	if gone, err := s.projectGone(ctx, sc); err != nil || gone {
		if gone {
			return s.store.Delete(ctx, sc.Project, sc.ID)
		}
		return err
	}
	spec, err := Parse(sc.Cron, sc.Timezone)
	if err != nil {
		return err
	}
	// Times more than ScheduleLateAfter late were missed: catch_up says
	// which of them still run. However long the outage, one pass moves the
	// schedule past it (only on-time times, or catch_up all, are capped).
	var due []time.Time
	var latest time.Time // the latest missed time, for catch_up one
	next := sc.Next
	for ; !next.IsZero() && !next.After(now) && len(due) < contracts.ScheduleMaxCatchUp; next = spec.Next(next) {
		if now.Sub(next) <= contracts.ScheduleLateAfter || sc.CatchUp == contracts.CatchUpAll {
			due = append(due, next)
			continue
		}
		if !latest.IsZero() {
			s.missed(ctx, &sc, latest)
		}
		latest = next
	}
	if !latest.IsZero() {
		if sc.CatchUp == contracts.CatchUpOne && len(due) == 0 {
			due = append(due, latest)
		} else {
			s.missed(ctx, &sc, latest)
		}
	}
	for _, t := range due {
		run, err := s.run(ctx, sc, t, false)
		if err != nil {
			// Not advanced: the next sweep tries this time again.
			return err
		}
		sc.Runs = remember(sc.Runs, run) // the next run's overlap looks at it
	}
	sc.Next = next
	if err := s.store.Update(ctx, sc, rev); err != nil && !errors.Is(err, ErrConflict) {
		return fmt.Errorf("advance: %w", err)
	}
	return nil
}

// missed records that sc's time t passed while no scheduler ran.
func (s *Service) missed(ctx context.Context, sc *contracts.Schedule, t time.Time) {
	sc.Runs = remember(sc.Runs, contracts.ScheduleRun{ScheduledAt: t, Outcome: contracts.RunMissed})
	s.observer.Skipped(ctx, contracts.RunMissed)
}

// projectGone reports whether sc's project was deleted (or created
// again) since sc was created.
func (s *Service) projectGone(ctx context.Context, sc contracts.Schedule) (bool, error) {
	p, err := s.access.Project(ctx, sc.Project)
	if errors.Is(err, access.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return p.Incarnation != sc.ProjectIncarnation, nil
}

// run submits the job of sc's run at t, after its overlap policy. An
// error means it may be tried again; a refused job is a run too.
func (s *Service) run(ctx context.Context, sc contracts.Schedule, t time.Time, manual bool) (contracts.ScheduleRun, error) {
	run := contracts.ScheduleRun{ScheduledAt: t, Manual: manual}
	id := contracts.ScheduleJobID(sc.ID, t, manual)
	if sc.Overlap != contracts.OverlapAllow {
		prev := previous(sc.Runs, id)
		if prev != "" {
			st, err := s.jobs.Job(ctx, prev)
			var ae *access.Error
			switch {
			case errors.As(err, &ae):
				// Unknown or expired: nothing overlaps.
			case err != nil:
				return run, err
			case !st.Status.Final() && sc.Overlap == contracts.OverlapSkip:
				run.Outcome, run.Message = contracts.RunSkipped, "job "+prev+" of the run before has not ended"
				s.observer.Skipped(ctx, contracts.RunSkipped)
				return run, nil
			case !st.Status.Final():
				if _, err := s.jobs.Cancel(ctx, prev); err != nil && !errors.As(err, &ae) {
					return run, err
				}
			}
		}
	}
	if !manual {
		// A manual run's caller was authorized; a scheduled one acts for
		// the key that created the schedule, which must still be allowed.
		if ok, err := s.mayStillSubmit(ctx, sc, t); err != nil || !ok {
			if !ok && err == nil {
				run.Outcome, run.Message = contracts.RunRefused, "the API key "+sc.Actor+" that created the schedule was revoked, expired or lost the submit role on the project"
			}
			return run, err
		}
	}
	sub, err := submission(sc)
	if err != nil {
		return run, err
	}
	sub.JobID = id
	st, again, err := s.jobs.Submit(ctx, sub)
	var ae *access.Error
	switch {
	case errors.As(err, &ae):
		run.Outcome, run.Message = contracts.RunRefused, ae.Message
		return run, nil
	case err != nil:
		return run, fmt.Errorf("submit run at %s: %w", t.Format(time.RFC3339), err)
	}
	run.JobID, run.Outcome = st.JobID, contracts.RunQueued
	if !manual && !again {
		s.observer.Fired(ctx, st.SubmittedAt.Sub(t))
	}
	return run, nil
}

// mayStillSubmit reports whether the key that created sc may submit in
// its project at t.
func (s *Service) mayStillSubmit(ctx context.Context, sc contracts.Schedule, t time.Time) (bool, error) {
	k, err := s.access.Key(ctx, sc.Actor)
	if errors.Is(err, access.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	live := k.RevokedAt == nil && (k.ExpiresAt == nil || t.Before(*k.ExpiresAt))
	return live && access.NewPrincipal(k).Can(sc.Project, access.RoleSubmit), nil
}

// previous is the job of the latest run before the one whose job is id.
func previous(runs []contracts.ScheduleRun, id string) string {
	for i := len(runs) - 1; i >= 0; i-- {
		if runs[i].JobID != "" && runs[i].JobID != id {
			return runs[i].JobID
		}
	}
	return ""
}
