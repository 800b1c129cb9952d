package localexec_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/services/worker/internal/executor"
	"github.com/rdev-dev/rdev/services/worker/internal/localexec"
)

// As root, a job runs as the job user: it writes in its workspace, and
// cannot read a root-only file beside the workspaces (the data directory's
// NATS credentials) nor list the workspaces.
func TestJobUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("switching to the job user needs root")
	}
	const nobody = 65534
	data := t.TempDir()
	// t.TempDir's directories are 0700; a data directory is traversable.
	for _, d := range []string{filepath.Dir(data), data} {
		must(t, os.Chmod(d, 0o711))
	}
	secret := filepath.Join(data, "secret.nk")
	must(t, os.WriteFile(secret, []byte("SUSECRET"), 0o600))
	ex := newExecutor(t, localexec.Config{Root: filepath.Join(data, "workspaces"), User: &localexec.User{UID: nobody, GID: nobody}})

	code, stdout, _, err := exec(t, ex, executor.Spec{Project: "demo", Command: []string{"sh", "-c",
		`id -u; echo hi > written && cat written; cat ` + secret + ` || echo refused; ls .. || echo refused`}})
	if err != nil || code != 0 {
		t.Fatalf("job: %d, %v", code, err)
	}
	if got, want := strings.Fields(stdout), []string{"65534", "hi", "refused", "refused"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("job printed %q, want %q", got, want)
	}
}

func TestJobUserNeedsTraversableRoot(t *testing.T) {
	t.Parallel()
	private := t.TempDir() // 0700
	if _, err := localexec.New(localexec.Config{Root: filepath.Join(private, "ws"), User: &localexec.User{UID: 65534, GID: 65534}}); err == nil {
		t.Fatal("accepted workspaces the job user cannot reach")
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
