package worker_test

import (
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
)

// PrioritySlots names real priorities and gives each at least one slot: a
// level with none would never run (pausing it says so openly).
func TestPrioritySlotsValidation(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		slots map[contracts.Priority]int
		ok    bool
	}{
		{map[contracts.Priority]int{contracts.PriorityLow: 1, contracts.PriorityNormal: 2}, true},
		{map[contracts.Priority]int{contracts.PriorityLow: 0}, false},
		{map[contracts.Priority]int{contracts.PriorityLow: -1}, false},
		{map[contracts.Priority]int{"urgent": 1}, false},
		{map[contracts.Priority]int{"": 1}, false},
	} {
		err := worker.Config{Workspaces: t.TempDir(), PrioritySlots: c.slots}.Validate()
		if (err == nil) != c.ok {
			t.Errorf("PrioritySlots %v: Validate() = %v, want ok %v", c.slots, err, c.ok)
		}
	}
}
