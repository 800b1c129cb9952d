package natsjs

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
)

// The member's side of hub.Notifier, without NATS: the shared feed's
// hand-out is push, the hub's taking is TryNext.
var _ hub.Notifier = (*member)(nil)

// memberSetup returns a member of a shared feed that never starts a
// consumer (its linger outlasts the test) and a count of its wakes.
func memberSetup(t *testing.T, buffer int) (*member, *int) {
	t.Helper()
	s := &Store{cfg: Config{SharedBuffer: buffer, SharedBufferBytes: 1 << 20, SharedLinger: time.Hour}, log: slog.New(slog.DiscardHandler)}
	sh := &shared{s: s, members: map[string][]*member{}}
	m, _, ok := sh.join("s")
	if !ok {
		t.Fatal("join refused")
	}
	t.Cleanup(func() {
		sh.mu.Lock()
		if sh.idle != nil {
			sh.idle.Stop()
		}
		sh.mu.Unlock()
	})
	wakes := new(int)
	return m, wakes
}

func memLine(seq uint64) entry.Entry {
	return entry.Entry{StreamSeq: seq, Kind: entry.Line, Line: seq, Data: []byte("x")}
}

// takeAll takes until TryNext finds nothing or an error, and returns the
// sequences and the error.
func takeAll(t *testing.T, m *member) ([]uint64, error) {
	t.Helper()
	var got []uint64
	for {
		e, ok, err := m.TryNext()
		if err != nil || !ok {
			return got, err
		}
		got = append(got, e.StreamSeq)
	}
}

// The hub is woken once per quiet spell: when an entry comes after its
// TryNext found none, not for every entry, and not while it is taking.
func TestMemberWakesItsTakerOncePerQuietSpell(t *testing.T) {
	t.Parallel()
	m, wakes := memberSetup(t, 8)
	m.Notify(func() { *wakes++ })
	if *wakes != 0 {
		t.Fatalf("%d wakes with nothing queued", *wakes)
	}
	if got, err := takeAll(t, m); len(got) != 0 || err != nil {
		t.Fatalf("took %v, %v from an empty feed", got, err)
	}
	m.push(memLine(1))
	m.push(memLine(2))
	if *wakes != 1 {
		t.Fatalf("%d wakes for two entries after a quiet spell, want 1", *wakes)
	}
	e, ok, err := m.TryNext()
	if !ok || err != nil || e.StreamSeq != 1 {
		t.Fatalf("took %+v, %v, %v, want entry 1", e, ok, err)
	}
	m.push(memLine(3)) // while taking: no wake
	if got, err := takeAll(t, m); len(got) != 2 || got[0] != 2 || got[1] != 3 || err != nil {
		t.Fatalf("took %v, %v, want 2 3", got, err)
	}
	if *wakes != 1 {
		t.Fatalf("%d wakes, want 1: the taker was taking", *wakes)
	}
	m.push(memLine(4))
	if *wakes != 2 {
		t.Fatalf("%d wakes after the second quiet spell, want 2", *wakes)
	}
}

// Entries queued before Notify (between the join and the hub's start)
// wake the hub at once; so does an end found idle, after which TryNext
// gives what was queued, then the error.
func TestMemberWakesForWhatCameBeforeNotifyAndForItsEnd(t *testing.T) {
	t.Parallel()
	m, wakes := memberSetup(t, 8)
	m.push(memLine(1))
	m.Notify(func() { *wakes++ })
	if *wakes != 1 {
		t.Fatalf("%d wakes with an entry queued before Notify, want 1", *wakes)
	}
	if got, err := takeAll(t, m); len(got) != 1 || err != nil {
		t.Fatalf("took %v, %v, want entry 1", got, err)
	}
	failed := errors.New("shared feed failed")
	m.fail(failed)
	if *wakes != 2 {
		t.Fatalf("%d wakes after the end, want 2", *wakes)
	}
	if _, _, err := m.TryNext(); !errors.Is(err, failed) {
		t.Fatalf("TryNext after the end: %v, want the failure", err)
	}

	closed, closedWakes := memberSetup(t, 8)
	closed.Notify(func() { *closedWakes++ })
	_, _, _ = closed.TryNext()
	closed.Close()
	if _, _, err := closed.TryNext(); *closedWakes != 1 || !errors.Is(err, errFeedClosed) {
		t.Fatalf("closed member: %d wakes, TryNext %v; want 1 wake and errFeedClosed", *closedWakes, err)
	}
}

// A hub that does not take fails its feed with ErrFeedOverflow once its
// buffer is full; it still gets the entries queued before, then the error.
func TestMemberOverflowsAfterItsBuffer(t *testing.T) {
	t.Parallel()
	m, wakes := memberSetup(t, 3)
	m.Notify(func() { *wakes++ })
	for seq := uint64(1); seq <= 3; seq++ {
		if !m.push(memLine(seq)) {
			t.Fatalf("entry %d refused within the buffer", seq)
		}
	}
	if m.push(memLine(4)) {
		t.Fatal("entry 4 queued beyond the buffer of 3")
	}
	got, err := takeAll(t, m)
	if len(got) != 3 || !errors.Is(err, ErrFeedOverflow) {
		t.Fatalf("took %v, %v; want 1 2 3 then ErrFeedOverflow", got, err)
	}
}

// A quiet stream's member holds no channel, and an entry passing through
// it (pushed, woken, taken) allocates nothing once its queue exists: ten
// thousand mostly quiet streams on the shared feed. Not parallel:
// AllocsPerRun counts the process's allocations.
func TestMemberPassesAnEntryWithoutAllocating(t *testing.T) { //nolint:paralleltest // see above
	m, wakes := memberSetup(t, 8)
	m.Notify(func() { *wakes++ })
	e := memLine(1)
	allocs := testing.AllocsPerRun(100, func() {
		m.push(e)
		_, _, _ = m.TryNext()
		_, _, _ = m.TryNext() // finds nothing: the next push wakes
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per entry, want 0", allocs)
	}
	if m.ready != nil {
		t.Fatal("a member taken by TryNext made Next's channel")
	}
	if *wakes != 101 { // AllocsPerRun runs once more to warm up
		t.Fatalf("%d wakes for 101 quiet spells", *wakes)
	}
}
