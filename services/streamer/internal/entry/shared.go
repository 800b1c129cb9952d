package entry

import "sync"

// Encodings is how many encodings of one entry a Shared holds: one slot per
// way a client may ask for a stream to be written (the streamer's formats).
const Encodings = 2

// Shared holds the encodings of one live entry that every client of its
// stream copies: a hub fans one entry out to thousands of clients, and
// encoding it once rather than once per client is the point. The first
// client to need an encoding makes it; the others wait for it, if it is
// being made, and copy the same bytes.
//
// An encoding is immutable once made: nothing writes to its bytes after
// Encoding returned them, and its capacity is clipped to its length, so a
// caller that appends to it gets a copy. Callers copy the bytes out and keep
// them no longer than the entry.
type Shared struct {
	enc [Encodings]struct {
		once sync.Once
		b    []byte
	}
}

// Encoding returns encoding i (below Encodings) of e, whose Shared s is,
// made by encode the first time any client asks for i. encode must depend
// on nothing but e, since every client gets what it returned for the
// first one: what differs between clients (their format) picks i.
func (s *Shared) Encoding(i int, e Entry, encode func(Entry) []byte) []byte {
	slot := &s.enc[i]
	slot.once.Do(func() {
		b := encode(e)
		slot.b = b[:len(b):len(b)]
	})
	return slot.b
}
