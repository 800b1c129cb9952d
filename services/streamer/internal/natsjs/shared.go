package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
)

// The shared feed is the live entries of every stream at once: one ordered
// consumer over all of the output stream's subjects, handed out by stream
// id to the feeds open on it (its members). Ten thousand watched streams,
// each with a consumer of its own, were ten thousand pull requests with
// idle heartbeats and a consumer info request each per quiet 15 s: the
// server spent more than a core on them and its answers timed out. On the
// shared feed they are one consumer. A streamer watching few streams keeps
// a consumer per stream instead (Config.SharedAfter), so that it does not
// receive all of a busy cluster's output to serve three clients.

var (
	// ErrFeedOverflow ends a feed on the shared feed whose buffer was
	// full when an entry for it came: the shared feed does not wait for
	// one slow feed. Its hub fails and its clients join again from their
	// cursors, reading what they missed from history.
	ErrFeedOverflow = errors.New("live feed buffer full")
	// errFeedClosed ends a feed closed by its hub.
	errFeedClosed = errors.New("live feed closed")
	// errStoreClosed is returned by a feed opening on the shared feed
	// once the store is closed.
	errStoreClosed = errors.New("live feeds closed")
	// errSharedIdle ends a shared feed stopped for want of members.
	errSharedIdle = errors.New("shared live feed stopped: no feeds")
)

// sharedFilters are the filter subjects of the shared feed: everything
// the output stream holds (pkg/topology), a superset of every stream's
// contracts.StreamFilters.
var sharedFilters = []string{contracts.SubjectOutputPrefix + ".>", contracts.SubjectEventsPrefix + ".>"}

// shared is one shared feed, from its start to its end; a new one starts
// when a feed needs it after the previous one ended.
type shared struct {
	s     *Store
	ready chan struct{} // closed once started: f is running or err is set
	f     *feed         // the consumer
	err   error         // why it could not start
	done  chan struct{} // closed once run returns (or start failed)

	mu      sync.Mutex
	last    uint64               // stream sequence of the last message handed out
	members map[string][]*member // by stream id
	n       int                  // members
	dead    error                // set once it ended: it takes no more members
	idle    *time.Timer          // armed while it has no member
}

// claimOwn reports whether a feed opening now gets a consumer of its own
// and, if so, counts it among the open feeds at once, so that feeds
// opening together do not all find room below the threshold.
func (s *Store) claimOwn() bool {
	switch after := int64(s.cfg.SharedAfter); {
	case after == 0:
		s.own.Add(1)
		return true
	case after < 0:
		return false
	case s.own.Add(1)+s.onShared.Load() > after:
		s.own.Add(-1)
		return false
	default:
		return true
	}
}

// openShared opens a feed of streamID on the shared feed, starting the
// shared feed if none runs. The boundary is the last message the shared
// feed handed out before the feed joined, so the feed gets exactly what
// comes after it: no stream info request per feed.
func (s *Store) openShared(ctx context.Context, streamID string) (hub.Feed, uint64, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		sh, lead := s.sharedFeed()
		if sh == nil {
			return nil, 0, errStoreClosed
		}
		if lead {
			sh.start(ctx)
		}
		select {
		case <-sh.ready:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		if sh.err != nil {
			s.dropShared(sh)
			return nil, 0, sh.err
		}
		if m, last, ok := sh.join(streamID); ok {
			return m, last, nil
		}
		s.dropShared(sh) // it ended meanwhile: start another
	}
}

// sharedFeed returns the current shared feed, or a new one that the
// caller (lead) must start; nil once the store is closed.
func (s *Store) sharedFeed() (sh *shared, lead bool) {
	s.shMu.Lock()
	defer s.shMu.Unlock()
	if s.shClosed {
		return nil, false
	}
	if s.sh == nil {
		s.sh = &shared{s: s, ready: make(chan struct{}), done: make(chan struct{}), members: map[string][]*member{}}
		return s.sh, true
	}
	return s.sh, false
}

// dropShared forgets sh if it is the current shared feed.
func (s *Store) dropShared(sh *shared) {
	s.shMu.Lock()
	if s.sh == sh {
		s.sh = nil
	}
	s.shMu.Unlock()
}

// start opens the shared feed's consumer right after the output stream's
// current end and starts handing out its messages.
func (sh *shared) start(ctx context.Context) {
	last, err := sh.s.boundary(ctx)
	if err == nil {
		sh.f, err = sh.s.openOwn(ctx, "(shared)", sharedFilters, last+1)
	}
	if err != nil {
		sh.err = fmt.Errorf("start shared live feed: %w", err)
		close(sh.done)
		close(sh.ready)
		return
	}
	sh.last = last // before ready: no member yet
	sh.s.log.Info("shared live feed started", "from_seq", last+1)
	go sh.run() //nolint:contextcheck // the shared feed outlives the open that started it; its consumer has a context of its own
	close(sh.ready)
}

func (sh *shared) run() {
	defer close(sh.done)
	for {
		msg, seq, err := sh.f.msg()
		if err != nil {
			sh.end(err)
			return
		}
		sh.handOut(msg.Subject(), seq, msg.Data())
	}
}

// handOut queues the message on the feeds of its stream, and records it
// as the last handed out (under the same lock as joins: a feed joining
// gets the message if and only if its boundary is before it).
func (sh *shared) handOut(subject string, seq uint64, data []byte) {
	id := streamOf(subject)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.last = seq
	ms := sh.members[id]
	if len(ms) == 0 {
		return
	}
	e, err := entry.Parse(id, subject, seq, data)
	if err != nil {
		sh.s.log.Warn("undecodable message", "stream_id", id, "seq", seq, "err", err)
		e.Kind = entry.Invalid
	}
	for i := 0; i < len(ms); i++ {
		if ms[i].push(e) {
			continue
		}
		sh.s.overflows.Add(1)
		sh.s.log.Warn("live feed overflowed; its clients rejoin from their cursors", "stream_id", id, "seq", seq)
		ms = sh.removeLocked(ms[i])
		i--
	}
}

// join adds a feed of streamID and returns it with its boundary, or
// reports false when the shared feed has ended.
func (sh *shared) join(streamID string) (*member, uint64, bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.dead != nil {
		return nil, 0, false
	}
	if sh.idle != nil {
		sh.idle.Stop()
		sh.idle = nil
	}
	m := &member{sh: sh, id: streamID}
	sh.members[streamID] = append(sh.members[streamID], m)
	sh.n++
	sh.s.onShared.Add(1)
	return m, sh.last, true
}

// removeLocked drops m from the members, arming the idle timer when it
// was the last, and returns its stream's remaining members.
func (sh *shared) removeLocked(m *member) []*member {
	ms := sh.members[m.id]
	for i, o := range ms {
		if o == m {
			ms = append(ms[:i], ms[i+1:]...)
			sh.n--
			sh.s.onShared.Add(-1)
			break
		}
	}
	if len(ms) == 0 {
		delete(sh.members, m.id)
	} else {
		sh.members[m.id] = ms
	}
	if sh.n == 0 && sh.dead == nil && sh.idle == nil {
		sh.idle = time.AfterFunc(sh.s.cfg.SharedLinger, sh.stopIdle)
	}
	return ms
}

func (sh *shared) leave(m *member) {
	sh.mu.Lock()
	sh.removeLocked(m)
	sh.mu.Unlock()
}

// stopIdle stops the shared feed if it still has no member.
func (sh *shared) stopIdle() {
	sh.mu.Lock()
	if sh.n > 0 || sh.dead != nil {
		sh.mu.Unlock()
		return
	}
	sh.dead = errSharedIdle
	sh.mu.Unlock()
	sh.s.dropShared(sh)
	sh.s.log.Info("shared live feed stopped: no feeds on it")
	sh.f.Close()
}

// end runs once the consumer failed for good (or was closed): every
// member fails, so its hub fails and its clients join again from their
// cursors, on a new shared feed.
func (sh *shared) end(err error) {
	sh.mu.Lock()
	if sh.dead == nil {
		sh.dead = fmt.Errorf("shared live feed: %w", err)
		sh.s.log.Error("shared live feed failed; its feeds end", "feeds", sh.n, "err", err)
	}
	members := sh.members
	sh.members, sh.n = map[string][]*member{}, 0
	if sh.idle != nil {
		sh.idle.Stop()
		sh.idle = nil
	}
	reason := sh.dead
	sh.mu.Unlock()
	for _, ms := range members {
		for _, m := range ms {
			sh.s.onShared.Add(-1)
			m.fail(reason)
		}
	}
	sh.s.dropShared(sh)
	sh.f.Close()
}

// stop ends the shared feed and waits for its goroutine.
func (sh *shared) stop() {
	<-sh.ready
	if sh.err != nil {
		return
	}
	sh.mu.Lock()
	if sh.dead == nil {
		sh.dead = errFeedClosed
	}
	sh.mu.Unlock()
	sh.f.Close()
	<-sh.done
}

// Close stops the shared feed, if one runs: feeds on it fail, and a feed
// opening on it afterwards fails (an open racing with shutdown must not
// start another). Feeds with consumers of their own are their hubs' to
// close.
func (s *Store) Close() {
	s.shMu.Lock()
	sh := s.sh
	s.sh, s.shClosed = nil, true
	s.shMu.Unlock()
	if sh != nil {
		sh.stop()
	}
}

// streamOf returns the stream id of a subject of the output stream,
// without allocating: <id> of rdev.output.<id> (the legacy subject),
// rdev.output.<project>.<id> and rdev.events.<project>.<id>.<type>, the
// subjects contracts.StreamFilters matches; "" for any other.
func streamOf(subject string) string {
	if rest, ok := strings.CutPrefix(subject, contracts.SubjectOutputPrefix+"."); ok {
		_, id, scoped := strings.Cut(rest, ".")
		if !scoped {
			return rest
		}
		if strings.IndexByte(id, '.') >= 0 {
			return ""
		}
		return id
	}
	if rest, ok := strings.CutPrefix(subject, contracts.SubjectEventsPrefix+"."); ok {
		_, rest, ok = strings.Cut(rest, ".")
		if !ok {
			return ""
		}
		id, typ, ok := strings.Cut(rest, ".")
		if !ok || strings.IndexByte(typ, '.') >= 0 {
			return ""
		}
		return id
	}
	return ""
}

// member is one stream's feed on the shared feed: a bounded queue the
// shared feed fills without waiting and the hub drains. Its hub takes
// from it with TryNext and is woken (Notify) when entries come after it
// found none, so a quiet stream holds no goroutine of its hub's; Next,
// which waits, is for takers that keep a goroutine.
type member struct {
	sh   *shared
	id   string
	once sync.Once

	mu    sync.Mutex
	q     []entry.Entry // q[head:] not yet taken
	head  int
	size  int           // data bytes in q[head:]
	err   error         // why the feed ended
	ready chan struct{} // Next's: holds a token once entries arrive in an empty queue or the feed ends; made by the first Next
	wake  func()        // set by Notify
	idle  bool          // TryNext found nothing: wake at the next entry or the end
}

// push queues e, or fails the feed when its buffer is full. It reports
// whether e was queued (or the feed had ended already).
func (m *member) push(e entry.Entry) bool {
	cfg := &m.sh.s.cfg
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return true
	}
	n := len(m.q) - m.head
	if n >= cfg.SharedBuffer || (n > 0 && m.size+len(e.Data) > cfg.SharedBufferBytes) {
		m.err = ErrFeedOverflow
		m.signalLocked()
		return false
	}
	m.q = append(m.q, e)
	m.size += len(e.Data)
	if n == 0 {
		m.signalLocked()
		return true
	}
	m.mu.Unlock()
	return true
}

// signalLocked tells the taker that entries arrived in an empty queue or
// the feed ended, and unlocks m.mu.
func (m *member) signalLocked() {
	ready, wake := m.ready, m.wake
	if !m.idle {
		wake = nil // the taker is taking: it finds the entry itself
	}
	m.idle = false
	m.mu.Unlock()
	if ready != nil {
		select {
		case ready <- struct{}{}:
		default:
		}
	}
	if wake != nil {
		wake()
	}
}

// fail ends the feed with err; Next returns it once the queue is drained.
func (m *member) fail(err error) {
	m.mu.Lock()
	if m.err == nil {
		m.err = err
	}
	m.signalLocked()
}

// Notify implements hub.Notifier.
func (m *member) Notify(wake func()) {
	m.mu.Lock()
	m.wake = wake
	if m.head < len(m.q) || m.err != nil {
		m.idle = true // so that signalLocked wakes
		m.signalLocked()
		return
	}
	m.idle = true
	m.mu.Unlock()
}

// TryNext implements hub.Notifier.
func (m *member) TryNext() (entry.Entry, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.takeLocked(); ok {
		return e, true, nil
	}
	if m.err != nil {
		return entry.Entry{}, false, m.err
	}
	m.idle = true
	return entry.Entry{}, false, nil
}

// takeLocked takes the next entry, if any.
func (m *member) takeLocked() (entry.Entry, bool) {
	if m.head == len(m.q) {
		return entry.Entry{}, false
	}
	e := m.q[m.head]
	m.q[m.head] = entry.Entry{}
	m.head++
	m.size -= len(e.Data)
	if m.head == len(m.q) { // drained: reuse a small queue, drop a big one
		m.q, m.head = m.q[:0], 0
		if cap(m.q) > 64 {
			m.q = nil
		}
	}
	return e, true
}

// Next returns the next entry, or the error that ended the feed once
// every entry queued before it was taken, waiting for either.
func (m *member) Next() (entry.Entry, error) {
	for {
		m.mu.Lock()
		if e, ok := m.takeLocked(); ok {
			m.mu.Unlock()
			return e, nil
		}
		err := m.err
		if m.ready == nil {
			m.ready = make(chan struct{}, 1)
		}
		ready := m.ready
		m.mu.Unlock()
		if err != nil {
			return entry.Entry{}, err
		}
		<-ready
	}
}

// Close leaves the shared feed; a blocked Next returns, and a taker found
// idle by TryNext is woken to find the end.
func (m *member) Close() {
	m.once.Do(func() {
		m.sh.leave(m)
		m.mu.Lock()
		clear(m.q)
		m.q, m.head, m.size = nil, 0, 0
		if m.err == nil {
			m.err = errFeedClosed
		}
		m.signalLocked()
	})
}
