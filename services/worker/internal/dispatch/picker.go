// Package dispatch takes jobs from the per-priority JetStream consumers and
// hands them to the runner, highest priority first, without starving the
// lower levels.
//
// JetStream does not reorder a stream by priority, so each level has its own
// durable consumer. Each level prefetches at most one message (kept alive
// with InProgress while it waits); when a run slot frees, the Picker
// chooses among the levels holding a message.
package dispatch

// Picker chooses the level of each dispatch: the highest level that has
// work, unless a lower level with work has been passed over fairEvery-1
// times in a row; then the most passed-over level goes (ties to the higher
// level). Under a saturated high level, each lower level with work still
// gets at least one dispatch in every fairEvery.
//
// A Picker is not safe for concurrent use.
type Picker struct {
	fairEvery int
	skipped   []int
}

// NewPicker returns a Picker over levels levels (index 0 is the highest).
// fairEvery below 1 is taken as 1 (round robin among levels with work).
func NewPicker(levels, fairEvery int) *Picker {
	return &Picker{fairEvery: max(fairEvery, 1), skipped: make([]int, levels)}
}

// Pick returns the level to dispatch from, given which levels have work,
// or -1 when none has. It records the decision.
func (p *Picker) Pick(ready []bool) int {
	chosen := -1
	for i, r := range ready {
		if r && p.skipped[i] >= p.fairEvery-1 && (chosen < 0 || p.skipped[i] > p.skipped[chosen]) {
			chosen = i
		}
	}
	if chosen < 0 {
		for i, r := range ready {
			if r {
				chosen = i
				break
			}
		}
	}
	if chosen < 0 {
		return -1
	}
	for i, r := range ready {
		switch {
		case i == chosen || !r:
			// A level without work is not being starved.
			p.skipped[i] = 0
		default:
			p.skipped[i]++
		}
	}
	return chosen
}
