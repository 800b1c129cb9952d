package natstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// CLI builds the nats CLI (natscli v0.5.0, the version rdev documents)
// into a temporary directory and returns its path; the test is skipped
// when it cannot be built (offline without it in the module cache).
func CLI(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	cmd := exec.CommandContext(tb.Context(), "go", "install", "github.com/nats-io/natscli/nats@v0.5.0")
	cmd.Dir = dir // outside the workspace: its own module graph
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Skipf("building the nats CLI v0.5.0 failed (offline?), so this test cannot run: %v\n%s", err, out)
	}
	return filepath.Join(dir, "nats")
}
