package access

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Change is one write to a project or a key.
type Change struct {
	// Project or Key is set, with the id of what changed.
	Project, Key string
}

// ChangeFeed reports writes to projects and keys; the natskv store
// implements it with a watch on the access bucket.
type ChangeFeed interface {
	// Watch calls fn, from one goroutine, for every change made after it
	// returns, until ctx ends. It returns once the watch is established.
	Watch(ctx context.Context, fn func(Change)) error
}

// CodeAccessRevoked is the Code of the *Error a held stream's context is
// cancelled with (see StreamGate.Hold).
const CodeAccessRevoked = "access_revoked"

// DefaultPollEvery is how often StreamGate.Watch checks every held stream
// when it cannot watch the changes.
const DefaultPollEvery = 5 * time.Second

// held is one open stream: who reads what, from where.
type held struct {
	r                    Reader
	keyID                string // "" for an unbound token
	project, incarnation string
	client               netip.Addr
	end                  context.CancelCauseFunc
}

// holds are the open streams of one StreamGate.
type holds struct {
	mu  sync.Mutex
	set map[*held]struct{}
}

func (hs *holds) add(h *held) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.set == nil {
		hs.set = map[*held]struct{}{}
	}
	hs.set[h] = struct{}{}
}

func (hs *holds) remove(h *held) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	delete(hs.set, h)
}

// matching returns the open streams of which keep reports true.
func (hs *holds) matching(keep func(*held) bool) []*held {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	var out []*held
	for h := range hs.set {
		if keep(h) {
			out = append(out, h)
		}
	}
	return out
}

// Hold registers an open stream of a project's incarnation that r was
// allowed (Allow) to read from client, and returns a context that ends,
// with an *Error of Code CodeAccessRevoked as its cause
// (context.Cause), once r may no longer read it: the key that opened it
// or asked for its token is revoked, deleted or expires, loses its read
// access to the project, or the project is deleted (for a token) or
// created again. Changes are noticed through Watch. The returned cancel
// function ends the context and forgets the stream. A store error while checking leaves the
// stream open: the next change or poll checks again.
func (g *StreamGate) Hold(ctx context.Context, r Reader, project, incarnation string, client netip.Addr) (context.Context, context.CancelFunc) {
	hctx, end := context.WithCancelCause(ctx)
	h := &held{r: r, keyID: readerKey(r), project: project, incarnation: incarnation, client: client, end: end}
	g.holds.add(h)
	// A change between Allow and add went unseen for h: check once more,
	// and end the stream when its key expires (no write announces that).
	lk := g.lookups()
	g.check(ctx, h, lk)
	var expiry *time.Timer
	if k, ok := lk.keys[h.keyID]; ok && k.err == nil && k.k.ExpiresAt != nil {
		expiry = time.AfterFunc(time.Until(*k.k.ExpiresAt), func() {
			end(revoked("the API key of this stream expired"))
		})
	}
	return hctx, func() {
		if expiry != nil {
			expiry.Stop()
		}
		g.holds.remove(h)
		end(context.Canceled)
	}
}

// Watch follows the changes of the Changes feed (or of Keys, when it is a
// ChangeFeed) until ctx ends, checking the held streams each change is
// about. Call it once. When the feed cannot be watched (none, or the NATS
// user may not watch the access bucket) it checks every held stream each
// PollEvery instead, and returns the reason.
func (g *StreamGate) Watch(ctx context.Context) error {
	feed := g.Changes
	if feed == nil {
		feed, _ = g.Keys.(ChangeFeed)
	}
	err := errors.New("no change feed")
	if feed != nil {
		// A change drops what it touched before the streams are checked
		// again, so that the checks read it anew.
		err = feed.Watch(ctx, func(c Change) {
			g.recent.changed(c)
			g.changed(ctx, c)
		})
	}
	if err == nil {
		g.recent.follow()
		return nil
	}
	every := g.PollEvery
	if every <= 0 {
		every = DefaultPollEvery
	}
	go g.poll(ctx, every)
	return fmt.Errorf("%w: checking open streams every %s instead", err, every)
}

func (g *StreamGate) changed(ctx context.Context, c Change) {
	hs := g.holds.matching(func(h *held) bool {
		return (c.Key != "" && h.keyID == c.Key) || (c.Project != "" && h.project == c.Project)
	})
	g.checkAll(ctx, hs)
}

func (g *StreamGate) poll(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.checkAll(ctx, g.holds.matching(func(*held) bool { return true }))
		}
	}
}

func (g *StreamGate) checkAll(ctx context.Context, hs []*held) {
	if len(hs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lk := g.lookups()
	for _, h := range hs {
		g.check(ctx, h, lk)
	}
}

// check ends h's stream when its reader lost access.
func (g *StreamGate) check(ctx context.Context, h *held, lk *lookups) {
	var ae *Error
	if err := g.recheck(ctx, lk, h.r, h.keyID, h.project, h.incarnation, h.client); errors.As(err, &ae) {
		h.end(ae)
	}
}

// readerKey is the key whose revocation ends r's access: the one that
// asked for its bound token, or the one it sent; "" for an unbound token.
func readerKey(r Reader) string {
	switch {
	case r.Token && r.Bound:
		return r.Grant.KeyID
	case !r.Token:
		return r.Principal.Key.ID
	}
	return ""
}

// recheck returns an *Error (CodeAccessRevoked) when r lost access to
// project's incarnation from client, another error when the store could
// not tell, and nil when r keeps it.
func (g *StreamGate) recheck(ctx context.Context, lk *lookups, r Reader, keyID, project, incarnation string, client netip.Addr) error {
	if keyID != "" {
		k, err := lk.Key(ctx, keyID)
		switch {
		case errors.Is(err, ErrNotFound):
			return revoked("the API key of this stream was deleted")
		case err != nil:
			return err
		case k.RevokedAt != nil:
			return revoked("the API key of this stream was revoked")
		case k.ExpiresAt != nil && !g.now().Before(*k.ExpiresAt):
			return revoked("the API key of this stream expired")
		}
		if !r.Token {
			r.Principal = NewPrincipal(k) // its scopes as they are now
		}
	}
	var ae *Error
	if err := g.allow(ctx, lk, r, project, incarnation, client); errors.As(err, &ae) {
		return revoked("read access to this stream ended: its project was deleted or created again, or the key's access to it changed")
	} else if err != nil {
		return err
	}
	return nil
}

// Recheck repeats, for readers admitted earlier (Admit, then Allow), the
// checks Hold makes while a stream is open — the key still good, the
// project still in the incarnation, the client's address still allowed —
// for a caller that keeps its own list of open readers (the API's NATS
// connections of direct subscribers). It reads each key and project once:
// make one per round of checks.
type Recheck struct {
	g  *StreamGate
	lk *lookups
}

// NewRecheck starts a round of checks.
func (g *StreamGate) NewRecheck() *Recheck { return &Recheck{g: g, lk: g.lookups()} }

// Check returns nil when r may still read project's incarnation from
// client; an *Error of Code CodeAccessRevoked when it may not; another
// error when the store could not tell (keep the reader, check again later).
func (rc *Recheck) Check(ctx context.Context, r Reader, project, incarnation string, client netip.Addr) error {
	return rc.g.recheck(ctx, rc.lk, r, readerKey(r), project, incarnation, client)
}

func revoked(msg string) *Error { return errorf(KindForbidden, CodeAccessRevoked, "%s", msg) }

func (g *StreamGate) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// lookups reads each key and project once for one round of checks.
type lookups struct {
	g        *StreamGate
	keys     map[string]keyResult
	projects map[string]projectResult
}

type keyResult struct {
	k   Key
	err error
}

type projectResult struct {
	p   Project
	err error
}

func (g *StreamGate) lookups() *lookups {
	return &lookups{g: g, keys: map[string]keyResult{}, projects: map[string]projectResult{}}
}

func (lk *lookups) Key(ctx context.Context, id string) (Key, error) {
	r, ok := lk.keys[id]
	if !ok {
		r.k, r.err = gateKeys{lk.g}.Key(ctx, id)
		lk.keys[id] = r
	}
	return r.k, r.err
}

func (lk *lookups) Project(ctx context.Context, id string) (Project, error) {
	r, ok := lk.projects[id]
	if !ok {
		r.p, r.err = gateProjects{lk.g}.Project(ctx, id)
		lk.projects[id] = r
	}
	return r.p, r.err
}
