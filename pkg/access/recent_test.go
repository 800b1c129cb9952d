package access_test

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
)

// countedStore is a store of one key and one project that counts its
// reads. While gate is set, a key read waits for it to be released.
type countedStore struct {
	mu        sync.Mutex
	key       access.Key
	project   access.Project
	keyReads  atomic.Int64
	projReads atomic.Int64
	gate      chan struct{} // closed to let a waiting key read return
	reading   chan struct{} // receives when a key read starts waiting
}

func (s *countedStore) Key(_ context.Context, id string) (access.Key, error) {
	s.keyReads.Add(1)
	s.mu.Lock()
	k, gate, reading := s.key, s.gate, s.reading
	s.mu.Unlock()
	if gate != nil {
		reading <- struct{}{}
		<-gate
	}
	if id != k.ID {
		return access.Key{}, access.ErrNotFound
	}
	return k, nil
}

func (s *countedStore) Project(_ context.Context, id string) (access.Project, error) {
	s.projReads.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != s.project.ID {
		return access.Project{}, access.ErrNotFound
	}
	return s.project, nil
}

// manualFeed is a change feed the test drives.
type manualFeed struct{ fn func(access.Change) }

func (f *manualFeed) Watch(_ context.Context, fn func(access.Change)) error {
	f.fn = fn
	return nil
}

func newCountedGate(t *testing.T) (*access.StreamGate, *countedStore, string) {
	t.Helper()
	secret := access.NewSecret("K")
	s := &countedStore{key: access.Key{ID: "K", Hash: access.HashSecret(secret), Scopes: []string{"project:p:read"}},
		project: access.Project{ID: "p", Incarnation: "I"}}
	return &access.StreamGate{Signer: access.NewSigner([]byte(strings.Repeat("s", 32))), Keys: s, Projects: s}, s, secret
}

// open admits and allows the key's reader to p's stream, as a stream's
// opening does.
func open(t *testing.T, g *access.StreamGate, secret string) error {
	t.Helper()
	client := netip.MustParseAddr("127.0.0.1")
	r, err := g.Admit(context.Background(), "", secret, client, access.StreamResource("s"))
	if err != nil {
		return err
	}
	return g.Allow(context.Background(), r, "p", "I", client)
}

// While the gate follows the changes, a stream's opening reads its key and
// project from the store once, then from memory; a change makes the next
// opening read what it touched again, and a revocation refuses it. A gate
// that follows nothing reads the store every time.
func TestGateKeepsWhatItReadWhileItFollowsChanges(t *testing.T) {
	t.Parallel()
	g, s, secret := newCountedGate(t)
	for range 2 {
		if err := open(t, g, secret); err != nil {
			t.Fatal(err)
		}
	}
	if k, p := s.keyReads.Load(), s.projReads.Load(); k != 2 || p != 2 {
		t.Fatalf("without a feed: %d key and %d project reads for 2 openings, want 2 and 2", k, p)
	}

	feed := &manualFeed{}
	g.Changes = feed
	if err := g.Watch(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := open(t, g, secret); err != nil {
			t.Fatal(err)
		}
	}
	if k, p := s.keyReads.Load(), s.projReads.Load(); k != 3 || p != 3 {
		t.Fatalf("following changes: %d key and %d project reads after 3 more openings, want 3 and 3", k, p)
	}

	s.mu.Lock()
	now := time.Now()
	s.key.RevokedAt = &now
	s.mu.Unlock()
	if err := open(t, g, secret); err != nil {
		t.Fatalf("before the feed tells of the revocation the kept key admits: %v", err)
	}
	feed.fn(access.Change{Key: "K"})
	if got := code(open(t, g, secret)); got != "revoked_api_key" {
		t.Fatalf("after the feed told of the revocation: %s, want revoked_api_key", got)
	}
	if p := s.projReads.Load(); p != 3 {
		t.Fatalf("a key's change made the project be read again (%d reads)", p)
	}

	s.mu.Lock()
	s.key.RevokedAt = nil
	s.project.Incarnation = "I2"
	s.mu.Unlock()
	feed.fn(access.Change{Key: "K"})
	feed.fn(access.Change{Project: "p"})
	if got := code(open(t, g, secret)); got != "stream_not_found" {
		t.Fatalf("after the project was created again: %s, want stream_not_found", got)
	}
}

// A read under way when a change comes is used but not kept: it may hold
// what the change replaced.
func TestGateKeepsNoReadThatOverlappedAChange(t *testing.T) {
	t.Parallel()
	g, s, secret := newCountedGate(t)
	feed := &manualFeed{}
	g.Changes = feed
	if err := g.Watch(t.Context()); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	s.mu.Lock()
	s.gate, s.reading = release, make(chan struct{})
	reading := s.reading
	s.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- open(t, g, secret) }()
	<-reading
	feed.fn(access.Change{Key: "K"}) // the key changed while it was read
	s.mu.Lock()
	s.gate = nil
	s.mu.Unlock()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := open(t, g, secret); err != nil {
		t.Fatal(err)
	}
	if k := s.keyReads.Load(); k != 2 {
		t.Fatalf("%d key reads, want 2: the read that overlapped the change was kept", k)
	}
	if err := open(t, g, secret); err != nil {
		t.Fatal(err)
	}
	if k := s.keyReads.Load(); k != 2 {
		t.Fatalf("%d key reads, want 2: the read after the change was not kept", k)
	}
}
