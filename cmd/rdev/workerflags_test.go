package main

import (
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
)

// parseWorkerFlags parses rdev worker with args and returns its worker
// flags, or the parser's refusal.
func parseWorkerFlags(t *testing.T, args ...string) (workerFlags, error) {
	t.Helper()
	var c cli
	parser, err := newParser(&c, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, err = parser.Parse(append([]string{"worker"}, args...))
	return c.Worker.Worker, err
}

// --job-nice takes a niceness or idle per priority; anything else is
// refused when the command line is parsed, before rdev connects anywhere.
func TestJobNiceFlag(t *testing.T) {
	t.Parallel()
	parse := func(value string) (map[contracts.Priority]int, error) {
		w, err := parseWorkerFlags(t, "--job-nice", value)
		if err != nil {
			return nil, err
		}
		return w.JobNice.byPriority()
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

// --priority-slots takes at least one slot per known priority; anything
// else is refused when the command line is parsed.
func TestPrioritySlotsFlag(t *testing.T) {
	t.Parallel()
	parse := func(value string) (map[contracts.Priority]int, error) {
		w, err := parseWorkerFlags(t, "--priority-slots", value)
		return w.PrioritySlots.byPriority(), err
	}
	got, err := parse("low=1,normal=3")
	want := map[contracts.Priority]int{contracts.PriorityLow: 1, contracts.PriorityNormal: 3}
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("low=1,normal=3: %v, %v; want %v", got, err, want)
	}
	for bad, msg := range map[string]string{"low=0": "want 1 slot or more", "urgent=2": "unknown priority", "low=x": `"x"`} {
		if _, err := parse(bad); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: %v, want a refusal saying %q", bad, err, msg)
		}
	}
}
