package natskv_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/natskv"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

func setup(t *testing.T) (context.Context, jetstream.KeyValue, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Server(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	kv, err := topology.AccessBucket(ctx, js, topology.Config{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	return ctx, kv, js
}

// Several processes start against a fresh bucket at once: exactly one
// layout mark is written and all agree on the token secret.
func TestOpenConcurrentlyAgrees(t *testing.T) {
	t.Parallel()
	ctx, kv, _ := setup(t)
	var wg sync.WaitGroup
	secrets := make([][]byte, 8)
	errs := make([]error, 8)
	for i := range 8 {
		wg.Go(func() {
			s, err := natskv.Open(ctx, kv)
			if err != nil {
				errs[i] = err
				return
			}
			secrets[i], errs[i] = s.TokenSecret(ctx)
		})
	}
	wg.Wait()
	for i := range 8 {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if len(secrets[i]) != 32 || string(secrets[i]) != string(secrets[0]) {
			t.Fatalf("process %d got a different token secret", i)
		}
	}
	e, err := kv.Get(ctx, "meta.layout")
	if err != nil || string(e.Value()) != "1" || e.Revision() != 1 {
		t.Fatalf("layout mark %v rev %v err %v; want 1 written once", e, e.Revision(), err)
	}
}

// A bucket written by a newer rdev is refused rather than misread.
func TestOpenRefusesNewerLayout(t *testing.T) {
	t.Parallel()
	ctx, kv, _ := setup(t)
	if _, err := kv.Put(ctx, "meta.layout", []byte("99")); err != nil {
		t.Fatal(err)
	}
	if _, err := natskv.Open(ctx, kv); !errors.Is(err, natskv.ErrNewerLayout) {
		t.Fatalf("Open = %v, want ErrNewerLayout", err)
	}
}

func TestProjectsAndKeys(t *testing.T) {
	t.Parallel()
	ctx, kv, _ := setup(t)
	s, err := natskv.Open(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"beta", "alpha"} {
		if err := s.CreateProject(ctx, access.Project{ID: id, Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateProject(ctx, access.Project{ID: "alpha"}); !errors.Is(err, access.ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	ps, err := s.Projects(ctx)
	if err != nil || len(ps) != 2 || ps[0].ID != "alpha" || ps[1].ID != "beta" {
		t.Fatalf("Projects = %+v, %v", ps, err)
	}
	// Concurrent updates of one record all land (compare-and-set retries).
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := s.UpdateProject(ctx, "alpha", func(p *access.Project) error {
				p.MaxConcurrentJobs++
				return nil
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if p, _ := s.Project(ctx, "alpha"); p.MaxConcurrentJobs != 10 {
		t.Fatalf("after 10 concurrent increments: %d", p.MaxConcurrentJobs)
	}
	if _, err := s.UpdateProject(ctx, "nope", func(*access.Project) error { return nil }); !errors.Is(err, access.ErrNotFound) {
		t.Fatalf("update of missing project: %v", err)
	}
	if err := s.DeleteProject(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Project(ctx, "beta"); !errors.Is(err, access.ErrNotFound) {
		t.Fatalf("deleted project: %v", err)
	}
	if err := s.DeleteProject(ctx, "beta"); !errors.Is(err, access.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if ps, _ := s.Projects(ctx); len(ps) != 1 {
		t.Fatalf("projects after delete: %+v", ps)
	}

	if err := s.CreateKey(ctx, access.Key{ID: "K1", Scopes: []string{"admin"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Key(ctx, "K2"); !errors.Is(err, access.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	if ks, err := s.Keys(ctx); err != nil || len(ks) != 1 {
		t.Fatalf("Keys = %v %v", ks, err)
	}
}

// Watch reports changes made by another process (another Store on the
// same bucket), which is how caches learn to drop entries.
func TestWatchSeesOtherWriters(t *testing.T) {
	t.Parallel()
	ctx, kv, _ := setup(t)
	a, err := natskv.Open(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	b, err := natskv.Open(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan natskv.Change, 10)
	if err := a.Watch(ctx, func(c natskv.Change) { changes <- c }); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateKey(ctx, access.Key{ID: "K9"}); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateProject(ctx, access.Project{ID: "p9"}); err != nil {
		t.Fatal(err)
	}
	want := []natskv.Change{{Key: "K9"}, {Project: "p9"}}
	for _, w := range want {
		select {
		case got := <-changes:
			if got != w {
				t.Fatalf("change %+v, want %+v", got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no change event for %+v", w)
		}
	}
}
