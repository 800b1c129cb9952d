package dispatch

import "testing"

func TestPickerHighestFirstWhenNotStarving(t *testing.T) {
	t.Parallel()
	p := NewPicker(3, 10)
	for i := range 9 {
		if got := p.Pick([]Supply{Held, Held, Held}); got != 0 {
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
			lvl := p.Pick([]Supply{Held, Empty, Held})
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
		counts[p.Pick([]Supply{Held, Held, Held})]++
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
	if got := p.Pick([]Supply{Empty, Empty, Empty}); got != -1 {
		t.Fatalf("got %d, want -1", got)
	}
	if got := p.Pick([]Supply{Empty, Held, Empty}); got != 1 {
		t.Fatalf("got %d, want 1", got)
	}
}

// A level whose message is still being fetched keeps its turn: the Picker
// waits for it instead of dispatching a lower level, and the lower level's
// count of passes is kept, so its share is exact per decision.
func TestPickerWaitsForAComingLevel(t *testing.T) {
	t.Parallel()
	p := NewPicker(2, 4)
	var got []int
	for i := range 12 {
		// Every other decision finds the high message still on its way.
		if i%2 == 1 {
			if lvl := p.Pick([]Supply{Coming, Held}); lvl != -1 && lvl != 1 {
				t.Fatalf("decision %d: got level %d while high was coming", i, lvl)
			} else if lvl == 1 {
				got = append(got, lvl)
			}
			continue
		}
		got = append(got, p.Pick([]Supply{Held, Held}))
	}
	want := []int{0, 0, 0, 1, 0, 0}
	if len(got) < len(want) {
		t.Fatalf("dispatches %v, want at least %v", got, want)
	}
	for i, w := range want {
		if got[i] != w {
			t.Fatalf("dispatches %v, want %v first: low goes once in every 4, never in a coming high's place", got, want)
		}
	}
	if lvl := p.Pick([]Supply{Coming, Empty}); lvl != -1 {
		t.Fatalf("got %d with only a coming level, want -1 (wait)", lvl)
	}
}

// A slot only high priority may use never goes to a lower level: when
// it is a lower level's turn, PickUpTo(…, 0) returns -1 and that level
// keeps its turn for the next slot any level may use, so its share is
// the same whichever slots free.
func TestPickerHighOnlySlotKeepsLowerTurn(t *testing.T) {
	t.Parallel()
	p := NewPicker(2, 4)
	for i := range 3 {
		if got := p.PickUpTo([]Supply{Held, Held}, 0); got != 0 {
			t.Fatalf("high-only slot, dispatch %d: got level %d, want 0", i+1, got)
		}
	}
	// Low has been passed over 3 times: its turn.
	if got := p.PickUpTo([]Supply{Held, Held}, 0); got != -1 {
		t.Fatalf("high-only slot on low's turn: got level %d, want -1", got)
	}
	if got := p.Pick([]Supply{Held, Held}); got != 1 {
		t.Fatalf("next open slot: got level %d, want 1 (low kept its turn)", got)
	}
	// A lower level alone with work never takes a high-only slot.
	if got := p.PickUpTo([]Supply{Empty, Held}, 0); got != -1 {
		t.Fatalf("high-only slot with only low work: got level %d, want -1", got)
	}

	// Under a saturated high level, with every third slot a high-only
	// one, low still gets exactly one dispatch in every fairEvery.
	for _, fair := range []int{2, 5, 10} {
		p := NewPicker(2, fair)
		counts := make([]int, 2)
		for i := 0; counts[0]+counts[1] < 1000; i++ {
			lowest := 1
			if i%3 == 2 {
				lowest = 0
			}
			if lvl := p.PickUpTo([]Supply{Held, Held}, lowest); lvl >= 0 {
				counts[lvl]++
			}
		}
		if counts[1] != 1000/fair {
			t.Errorf("fairEvery %d: low got %d of 1000 dispatches, want exactly %d", fair, counts[1], 1000/fair)
		}
	}
}

// A level at its cap is passed over without being waited for, and keeps
// counting as passed over: once its job ends it gets the turn it was
// owed, so its share holds as far as the cap lets it.
func TestPickerCappedLevelKeepsItsTurn(t *testing.T) {
	t.Parallel()
	p := NewPicker(3, 4)
	// The low level's turn comes while it is capped: high goes instead,
	// at once.
	for i := range 6 {
		if got := p.Pick([]Supply{Held, Empty, Capped}); got != 0 {
			t.Fatalf("dispatch %d while low is capped: got level %d, want 0", i+1, got)
		}
	}
	// Its job ended: it is owed a turn and gets the next dispatch.
	if got := p.Pick([]Supply{Held, Empty, Held}); got != 2 {
		t.Fatalf("first dispatch after the cap freed: got level %d, want 2 (low)", got)
	}
	// Capped alone is no work to take.
	if got := p.Pick([]Supply{Empty, Empty, Capped}); got != -1 {
		t.Fatalf("only a capped level: got level %d, want -1", got)
	}
}
