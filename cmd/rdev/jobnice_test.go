package main

import (
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
)

// --job-nice takes a niceness or idle per priority; anything else is
// refused when the command line is parsed, before rdev connects anywhere.
func TestJobNiceFlag(t *testing.T) {
	t.Parallel()
	parse := func(value string) (map[contracts.Priority]int, error) {
		var c cli
		parser, err := newParser(&c, io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parser.Parse([]string{"worker", "--job-nice", value}); err != nil {
			return nil, err
		}
		return c.Worker.Worker.JobNice.byPriority()
	}
	got, err := parse("low=idle,normal=5")
	want := map[contracts.Priority]int{contracts.PriorityLow: worker.JobNiceIdle, contracts.PriorityNormal: 5}
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("low=idle,normal=5: %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"low=x", "low=", "low=IDLE"} {
		if _, err := parse(bad); err == nil || !strings.Contains(err.Error(), "want a niceness (0 to 19) or idle") {
			t.Errorf("%s: %v, want a clear refusal", bad, err)
		}
	}
}
