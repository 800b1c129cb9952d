package schedules

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// parser reads standard 5-field expressions and the @hourly-style macros.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Spec is a cron expression read in a zone.
type Spec struct {
	wall cron.Schedule
	loc  *time.Location
}

// Parse reads expr in the IANA zone ("" is UTC). It refuses an expression
// that never matches (e.g. 30 February).
func Parse(expr, zone string) (Spec, error) {
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return Spec{}, invalid("invalid_timezone", fmt.Sprintf("timezone %q is not an IANA zone such as Europe/Berlin", zone))
	}
	if zone == "Local" {
		return Spec{}, invalid("invalid_timezone", "timezone must name a zone; Local depends on the server")
	}
	// Read in UTC: the expression matches wall-clock times, which Next
	// places in loc itself (so the DST rule is rdev's, not the library's).
	s, err := parser.Parse(expr)
	if err == nil && strings.HasPrefix(expr, "@every") {
		err = errors.New("@every is not a cron schedule")
	}
	if err != nil {
		return Spec{}, invalid("invalid_cron", fmt.Sprintf("cron %q: %v; use 5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly", expr, err))
	}
	spec := Spec{wall: s, loc: loc}
	if spec.Next(time.Now()).IsZero() {
		return Spec{}, invalid("invalid_cron", fmt.Sprintf("cron %q never matches", expr))
	}
	return spec, nil
}

// Next returns the first scheduled time after t, or the zero time if
// there is none. Times are wall-clock times in the zone, each fired
// once:
//
//   - a time that does not exist (skipped by a spring-forward jump) fires
//     at the first instant after the jump, once even if several matched
//     (02:30 on a day the clocks go from 02:00 to 03:00 fires at 03:00);
//   - a time that occurs twice (a fall-back hour) fires at its first
//     occurrence only.
func (s Spec) Next(t time.Time) time.Time {
	w := wallOf(t.In(s.loc))
	for range 10000 {
		w = s.wall.Next(w)
		if w.IsZero() {
			return time.Time{}
		}
		if at := s.instant(w); at.After(t) {
			return at
		}
	}
	return time.Time{}
}

// wallOf is t's wall-clock reading as a UTC time.
func wallOf(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
}

// instant is the first instant whose wall-clock reading in the zone is w,
// or the end of the jump w falls in.
func (s Spec) instant(w time.Time) time.Time {
	t := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), 0, s.loc)
	start, end := t.ZoneBounds()
	if got := wallOf(t); !got.Equal(w) {
		// In a gap: time.Date read w with the offset of one side of the
		// jump; the jump is where that side's zone period starts or ends.
		if got.After(w) {
			return start
		}
		return end
	}
	if start.IsZero() {
		return t
	}
	_, before := start.Add(-time.Nanosecond).Zone()
	_, now := t.Zone()
	if before > now {
		// After a fall-back: w may have occurred before, under the
		// earlier (larger) offset.
		if earlier := t.Add(-time.Duration(before-now) * time.Second); wallOf(earlier.In(s.loc)).Equal(w) {
			return earlier
		}
	}
	return t
}
