package dispatch

import "testing"

func TestPickerHighestFirstWhenNotStarving(t *testing.T) {
	t.Parallel()
	p := NewPicker(3, 10)
	for i := range 9 {
		if got := p.Pick([]bool{true, true, true}); got != 0 {
			t.Fatalf("dispatch %d: got level %d, want 0", i+1, got)
		}
	}
}

func TestPickerGuaranteesShareUnderSaturation(t *testing.T) {
	t.Parallel()
	for _, fair := range []int{2, 5, 10} {
		p := NewPicker(3, fair)
		counts := make([]int, 3)
		maxRun := 0
		run := 0
		const n = 1000
		for range n {
			lvl := p.Pick([]bool{true, false, true})
			counts[lvl]++
			if lvl == 0 {
				run++
				maxRun = max(maxRun, run)
			} else {
				run = 0
			}
		}
		if counts[2] != n/fair {
			t.Errorf("fairEvery %d: low got %d of %d dispatches, want exactly %d", fair, counts[2], n, n/fair)
		}
		if maxRun > fair-1 {
			t.Errorf("fairEvery %d: %d high dispatches in a row while low waited", fair, maxRun)
		}
	}
}

func TestPickerEveryLowerLevelProgresses(t *testing.T) {
	t.Parallel()
	p := NewPicker(3, 10)
	counts := make([]int, 3)
	for range 1000 {
		counts[p.Pick([]bool{true, true, true})]++
	}
	for lvl, c := range counts {
		if c < 1000/20 {
			t.Errorf("level %d got %d of 1000 dispatches; every level must progress", lvl, c)
		}
	}
	if counts[0] < counts[1] || counts[0] < counts[2] {
		t.Errorf("high did not dominate: %v", counts)
	}
}

func TestPickerNoWork(t *testing.T) {
	t.Parallel()
	p := NewPicker(3, 10)
	if got := p.Pick([]bool{false, false, false}); got != -1 {
		t.Fatalf("got %d, want -1", got)
	}
	if got := p.Pick([]bool{false, true, false}); got != 1 {
		t.Fatalf("got %d, want 1", got)
	}
}
