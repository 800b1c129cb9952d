package schedules

import (
	"errors"
	"testing"
	"time"
)

func TestNextAcrossDST(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, cron, zone string
		from             string // RFC 3339
		want             []string
	}{
		// Europe/Berlin springs forward 2026-03-29 02:00 CET → 03:00 CEST.
		{"berlin spring 02:30 once at 03:00", "30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00+01:00",
			[]string{"2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"}},
		{"berlin spring every 15 minutes", "*/15 * * * *", "Europe/Berlin", "2026-03-29T01:40:00+01:00",
			[]string{"2026-03-29T01:45:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:15:00+02:00"}},
		// Europe/Berlin falls back 2026-10-25 03:00 CEST → 02:00 CET.
		{"berlin fall 02:30 once", "30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00+02:00",
			[]string{"2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"}},
		{"berlin fall hourly", "0 * * * *", "Europe/Berlin", "2026-10-25T00:30:00+02:00",
			[]string{"2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T03:00:00+01:00"}},
		// America/New_York springs forward 2026-03-08 02:00 EST → 03:00 EDT
		// and falls back 2026-11-01 02:00 EDT → 01:00 EST.
		{"new york spring 02:30 once at 03:00", "30 2 * * *", "America/New_York", "2026-03-07T12:00:00-05:00",
			[]string{"2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"}},
		{"new york fall 01:30 once", "30 1 * * *", "America/New_York", "2026-10-31T12:00:00-04:00",
			[]string{"2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"}},
		{"utc macro", "@hourly", "", "2026-01-01T10:20:00Z", []string{"2026-01-01T11:00:00Z", "2026-01-01T12:00:00Z"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			spec, err := Parse(c.cron, c.zone)
			if err != nil {
				t.Fatal(err)
			}
			at, _ := time.Parse(time.RFC3339, c.from)
			for i, w := range c.want {
				want, _ := time.Parse(time.RFC3339, w)
				if at = spec.Next(at); !at.Equal(want) {
					t.Fatalf("run %d at %s, want %s", i+1, at.In(spec.loc), want)
				}
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ cron, zone, code string }{
		{"* * * *", "", "invalid_cron"},
		{"61 * * * *", "", "invalid_cron"},
		{"0 0 30 2 *", "", "invalid_cron"},
		{"@every 1m", "", "invalid_cron"},
		{"* * * * *", "Mars/Olympus", "invalid_timezone"},
		{"* * * * *", "Local", "invalid_timezone"},
	} {
		_, err := Parse(c.cron, c.zone)
		var e *Error
		if !errors.As(err, &e) || e.Code != c.code {
			t.Errorf("Parse(%q, %q) = %v, want %s", c.cron, c.zone, err, c.code)
		}
	}
}
