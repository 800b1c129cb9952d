package entry_test

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
)

// Clients asking for the same encoding of a live entry at once get it made
// once, and the same bytes; each copies them and appends to them without
// touching what the others read (the race detector would see it); another
// slot is made on its own.
func TestSharedEncodesOncePerSlot(t *testing.T) {
	t.Parallel()
	e := entry.Entry{StreamSeq: 9, Kind: entry.Line, Line: 3, Data: []byte(`{"seq":3}`)}
	e.Shared = new(entry.Shared)
	var made [entry.Encodings]atomic.Int32
	encoder := func(i int) func(entry.Entry) []byte {
		return func(e entry.Entry) []byte {
			made[i].Add(1)
			b := make([]byte, 0, 256) // spare capacity a careless client could append into
			return append(append(b, byte('0'+i), ':'), e.Data...)
		}
	}
	const clients = 200
	got := make([][]byte, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			i := c % entry.Encodings
			b := e.Shared.Encoding(i, e, encoder(i))
			b = append(b, "|mine"...) // copies: the encoding's capacity is its length
			got[c] = b
		})
	}
	wg.Wait()
	for i := range made {
		if n := made[i].Load(); n != 1 {
			t.Errorf("encoding %d made %d times, want once", i, n)
		}
	}
	for c, b := range got {
		want := []byte{byte('0' + c%entry.Encodings), ':'}
		want = append(append(want, e.Data...), "|mine"...)
		if !bytes.Equal(b, want) {
			t.Fatalf("client %d: %q, want %q", c, b, want)
		}
	}
	if b := e.Shared.Encoding(0, e, encoder(0)); string(b) != `0:{"seq":3}` {
		t.Fatalf("encoding after every client appended: %q", b)
	}
}
