package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// repoRoot is the repository, seen from this module's directory.
const repoRoot = ".."

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	if code == 0 {
		// klog's flush daemon is started by the Kubernetes packages Helm imports.
		if err := goleak.Find(goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// rdevBinary is cmd/rdev built as the Dockerfile builds it: from the build
// context .dockerignore leaves, with the Dockerfile's own go build command
// and flags (dockerfile_test.go). Built once per test binary.
func rdevBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "rdev-image-")
		if built.err == nil {
			built.bin, built.err = buildLikeDockerfile(built.dir, testBuildArgs)
		}
	})
	if built.err != nil {
		t.Fatalf("build rdev as the Dockerfile does: %v", built.err)
	}
	return built.bin
}

// setting is one entry of `rdev settings --json`.
type setting struct {
	Flag     string   `json:"flag"`
	Env      []string `json:"env"`
	Default  string   `json:"default"`
	Commands []string `json:"commands"`
}

// envReadBy returns the environment variables the binary reads, per
// command, from its own flag definitions (`rdev settings --json`), so a
// setting renamed in cmd/rdev fails the deploy checks.
func envReadBy(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command(rdevBinary(t), "settings", "--json").Output()
	if err != nil {
		t.Fatalf("rdev settings --json: %v", err)
	}
	var list []setting
	if err := json.NewDecoder(bytes.NewReader(out)).Decode(&list); err != nil {
		t.Fatalf("decode rdev settings --json: %v", err)
	}
	by := map[string][]string{}
	for _, s := range list {
		for _, c := range s.Commands {
			for _, e := range s.Env {
				if !slices.Contains(by[c], e) {
					by[c] = append(by[c], e)
				}
			}
		}
	}
	if len(by["api"]) == 0 || len(by["worker"]) == 0 || len(by["streamer"]) == 0 {
		t.Fatalf("rdev settings --json lists no settings of api, worker or streamer: %s", out)
	}
	return by
}

// checkEnv fails for every name in env that command does not read.
func checkEnv(t *testing.T, where, command string, env []string, reads map[string][]string) {
	t.Helper()
	for _, name := range env {
		if !slices.Contains(reads[command], name) {
			t.Errorf("%s sets %s, which `rdev %s` does not read", where, name, command)
		}
	}
}

func repoPath(parts ...string) string { return filepath.Join(append([]string{repoRoot}, parts...)...) }
