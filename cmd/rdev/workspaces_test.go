package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Workspaces stay in the data directory when the job user can reach it,
// and move to the temporary directory when a directory above it is
// private, instead of the worker refusing to start.
func TestJobWorkspaces(t *testing.T) {
	t.Parallel()
	open := t.TempDir()
	for _, d := range []string{filepath.Dir(open), open} { // t.TempDir is private to its owner
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	ws := filepath.Join(open, "data", "workspaces")
	dir, moved, err := jobWorkspaces(ws)
	if err != nil || moved || dir != ws {
		t.Fatalf("reachable data dir: %q, moved %v, %v; want %q in place", dir, moved, err, ws)
	}
	if fi, err := os.Stat(filepath.Join(open, "data")); err != nil || fi.Mode().Perm() != 0o711 {
		t.Fatalf("data dir mode: %v, %v; want 0711", fi.Mode().Perm(), err)
	}

	private := filepath.Join(t.TempDir(), "home")
	if err := os.MkdirAll(private, 0o700); err != nil {
		t.Fatal(err)
	}
	dir, moved, err = jobWorkspaces(filepath.Join(private, "clone", "data", "workspaces"))
	if err != nil || !moved || !strings.HasPrefix(dir, os.TempDir()) {
		t.Fatalf("private parent: %q, moved %v, %v; want a directory under %s", dir, moved, err, os.TempDir())
	}
	again, _, _ := jobWorkspaces(filepath.Join(private, "clone", "data", "workspaces"))
	if again != dir {
		t.Fatalf("the same data dir moved to %q, then %q", dir, again)
	}
}
