// Package dispatch takes jobs from the per-priority JetStream consumers and
// hands them to the runner, highest priority first, without starving the
// lower levels.
//
// JetStream does not reorder a stream by priority, so each level has its own
// durable consumer, shared by every worker. Each level prefetches at most one
// message (kept alive with InProgress while it waits); when a run slot frees
// or a message arrives, the Picker chooses among the levels. A few slots
// beyond the worker's concurrency may be kept for the highest level
// (Config.HighSlots), so that its jobs start on arrival while the lower
// levels fill every other slot.
//
// The share a lower level gets holds across workers because each worker's
// decisions follow the rule exactly while a level has work: a level whose
// last fetch found a message counts as having work while its next message
// is being fetched (Coming), and the Picker waits for that message rather
// than dispatching a lower level in its place. Each worker then dispatches
// exactly one lower job in every FairEvery under a saturated higher level,
// so any number of workers together do too. A level at its cap
// (Config.LevelSlots) is Capped: passed over without being waited for, it
// keeps its turn for when one of its jobs ends, so its share holds as far
// as the cap allows.
package dispatch

// Supply is what a level has to offer the Picker at one decision.
type Supply int

const (
	// Empty: no message held, and the level's last fetch found none (or it
	// is paused). The level does not count as having work.
	Empty Supply = iota
	// Coming: no message held yet, but the last fetch found one and the
	// next is being fetched without waiting; the level has work, and the
	// Picker waits for it rather than give its turn to a lower level.
	Coming
	// Held: a message is held, ready to dispatch.
	Held
	// Capped: the level has work but runs as many jobs as it may
	// (Config.LevelSlots). It is not dispatched, nor waited for, and it
	// counts as passed over, so it gets its turn once a job of it ends.
	Capped
)

// Picker chooses the level of each dispatch: the highest level that has
// work, unless a lower level with work has been passed over fairEvery-1
// times in a row; then the most passed-over level goes (ties to the higher
// level). Under a saturated high level, each lower level with work still
// gets exactly one dispatch in every fairEvery.
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

// Pick returns the level to dispatch from, given each level's supply, or
// -1 when there is nothing to take now: no level has work, or the level
// whose turn it is has its message still Coming (ask again when a supply
// changes). It records the decision only when it returns a level.
func (p *Picker) Pick(supply []Supply) int {
	return p.PickUpTo(supply, len(supply)-1)
}

// PickUpTo is Pick for a run slot that only levels 0 to lowest may use
// (a slot kept for high priority): when the level whose turn it is lies
// below lowest, it returns -1 and records nothing, so that level keeps its
// turn for the next slot any level may use. The shares Pick guarantees
// hold whatever slots the dispatches use.
func (p *Picker) PickUpTo(supply []Supply, lowest int) int {
	chosen := p.choose(supply)
	if chosen < 0 || chosen > lowest || supply[chosen] != Held {
		return -1
	}
	for i, s := range supply {
		switch {
		case i == chosen || s == Empty:
			// A level without work is not being starved.
			p.skipped[i] = 0
		default: // Held, Coming or Capped: passed over
			p.skipped[i]++
		}
	}
	return chosen
}

// choose returns the level whose turn it is, Held or Coming, or -1 when
// no level that may be dispatched has work.
func (p *Picker) choose(supply []Supply) int {
	chosen := -1
	for i, s := range supply {
		if takes(s) && p.skipped[i] >= p.fairEvery-1 && (chosen < 0 || p.skipped[i] > p.skipped[chosen]) {
			chosen = i
		}
	}
	if chosen < 0 {
		for i, s := range supply {
			if takes(s) {
				return i
			}
		}
	}
	return chosen
}

// takes reports whether a level with supply s may be dispatched now or
// once its message comes.
func takes(s Supply) bool { return s == Held || s == Coming }
