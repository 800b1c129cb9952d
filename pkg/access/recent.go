package access

import (
	"context"
	"sync"
	"time"
)

// recent keeps the keys and projects a StreamGate read, while Watch follows
// the store's changes: a stream's opening read both from the store, and so
// did the check of Hold, four key-value reads on the way to its first
// line, and 80,000 when 20,000 clients reconnect at once.
//
// An entry is never older than the change feed: every change drops its
// entry before the held streams are checked again (Watch), and a read that
// was under way when any change came is used but not kept (fill). So a new
// stream sees a revocation as soon as the feed delivers it, as open ones
// do. Without a running feed nothing is kept.
type recent struct {
	mu       sync.Mutex
	live     bool   // Watch follows the changes
	gen      uint64 // changes seen; a read that saw a different number is not kept
	keys     map[string]recentEntry[Key]
	projects map[string]recentEntry[Project]
}

type recentEntry[T any] struct {
	v  T
	at time.Time
}

const (
	// recentFor bounds an entry's life should the feed stop delivering
	// without saying so.
	recentFor = 30 * time.Second
	// recentMax bounds each map; a full map starts over.
	recentMax = 10_000
)

// follow starts keeping entries: the feed now reports every change.
func (c *recent) follow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live = true
	c.keys, c.projects = map[string]recentEntry[Key]{}, map[string]recentEntry[Project]{}
}

// changed drops what a change touched and fails the reads under way.
func (c *recent) changed(ch Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.keys, ch.Key)
	delete(c.projects, ch.Project)
}

// through returns id's entry from m, or reads it with load and keeps it
// when no change came while it read. Errors are not kept: an unknown id
// costs a read each time, as a store that failed does.
func through[T any](ctx context.Context, c *recent, m *map[string]recentEntry[T], id string,
	load func(context.Context, string) (T, error)) (T, error) {
	c.mu.Lock()
	live, gen := c.live, c.gen
	if e, ok := (*m)[id]; live && ok && time.Since(e.at) < recentFor {
		c.mu.Unlock()
		return e.v, nil
	}
	c.mu.Unlock()
	v, err := load(ctx, id)
	if err != nil || !live {
		return v, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		if len(*m) >= recentMax {
			clear(*m)
		}
		(*m)[id] = recentEntry[T]{v: v, at: time.Now()}
	}
	return v, nil
}

// gateKeys and gateProjects read through the gate's recent entries.
type (
	gateKeys     struct{ g *StreamGate }
	gateProjects struct{ g *StreamGate }
)

func (k gateKeys) Key(ctx context.Context, id string) (Key, error) {
	return through(ctx, &k.g.recent, &k.g.recent.keys, id, k.g.Keys.Key)
}

func (p gateProjects) Project(ctx context.Context, id string) (Project, error) {
	return through(ctx, &p.g.recent, &p.g.recent.projects, id, p.g.Projects.Project)
}
