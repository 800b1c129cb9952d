package follow

import (
	"sync"
	"time"
)

// beat is the heartbeat every client of a Follower waits on: a channel
// closed once per period, then replaced. One timer serves every waiting
// client instead of a ticker each, which an idle connection would hold for
// hours. The timer is armed by the first waiter after each beat, so with
// nobody waiting nothing runs.
type beat struct {
	period time.Duration

	mu sync.Mutex
	c  chan struct{} // closed at the next beat; nil until someone waits
}

// C returns a channel closed at the next beat, at most period from now.
func (b *beat) C() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c == nil {
		b.c = make(chan struct{})
		time.AfterFunc(b.period, b.fire)
	}
	return b.c
}

func (b *beat) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.c)
	b.c = nil
}
