package natskv_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/natskv"
)

// The project reader sees project changes only, reads projects, and
// refuses a bucket of a newer layout without writing it.
func TestProjectsReadsAndWatchesProjectsOnly(t *testing.T) {
	t.Parallel()
	ctx, kv, _ := setup(t)
	store, err := natskv.Open(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := natskv.OpenProjects(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan string, 8)
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := p.WatchProjects(wctx, func(id string) { changed <- id }); err != nil {
		t.Fatal(err)
	}
	if _, err := store.TokenSecret(ctx); err != nil {
		t.Fatal(err)
	}
	if err := store.CreateKey(ctx, access.Key{ID: "k1", Hash: "h"}); err != nil {
		t.Fatal(err)
	}
	if err := store.CreateProject(ctx, access.Project{ID: "p1", MaxConcurrentJobs: 3}); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-changed:
		if id != "p1" {
			t.Fatalf("watch reported %q, want only project p1", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("project change not seen")
	}
	got, err := p.Project(ctx, "p1")
	if err != nil || got.MaxConcurrentJobs != 3 {
		t.Fatalf("Project = %+v, %v", got, err)
	}
	if _, err := p.Project(ctx, "absent"); !errors.Is(err, access.ErrNotFound) {
		t.Fatalf("absent project: %v, want ErrNotFound", err)
	}

	if _, err := kv.Put(ctx, "meta.layout", []byte("99")); err != nil {
		t.Fatal(err)
	}
	if _, err := natskv.OpenProjects(ctx, kv); !errors.Is(err, natskv.ErrNewerLayout) {
		t.Fatalf("newer layout: %v, want ErrNewerLayout", err)
	}
}
