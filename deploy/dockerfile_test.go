package deploy

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/shlex"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// testBuildArgs are the --build-arg values of the test build.
var testBuildArgs = map[string]string{"VERSION": "v0.0.0-test", "COMMIT": "0123abc", "DATE": "2026-12-04T00:00:00Z"}

// stage is one FROM of the Dockerfile and its instructions.
type stage struct {
	name, base string
	nodes      []*parser.Node
}

func parseDockerfile() ([]stage, error) {
	f, err := os.Open(repoPath("Dockerfile"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("parse Dockerfile: %w", err)
	}
	var stages []stage
	for _, n := range res.AST.Children {
		if strings.EqualFold(n.Value, "from") {
			s := stage{base: n.Next.Value}
			if as := n.Next.Next; as != nil && strings.EqualFold(as.Value, "as") && as.Next != nil {
				s.name = as.Next.Value
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].nodes = append(stages[len(stages)-1].nodes, n)
		}
	}
	return stages, nil
}

func (s stage) instructions(cmd string) []*parser.Node {
	var out []*parser.Node
	for _, n := range s.nodes {
		if strings.EqualFold(n.Value, cmd) {
			out = append(out, n)
		}
	}
	return out
}

// args are an instruction's words (JSON form) or its one shell string.
func args(n *parser.Node) []string {
	var out []string
	for a := n.Next; a != nil; a = a.Next {
		out = append(out, a.Value)
	}
	return out
}

// goBuild returns the environment and arguments of the build stage's
// `go build`, with the ARG values substituted.
func goBuild(stages []stage, buildArgs map[string]string) (env, argv []string, err error) {
	for _, s := range stages {
		if s.name != "build" {
			continue
		}
		for _, run := range s.instructions("run") {
			line := strings.Join(args(run), " ")
			if !strings.Contains(line, "go build") {
				continue
			}
			line = os.Expand(line, func(k string) string { return buildArgs[k] })
			words, err := shlex.Split(line)
			if err != nil {
				return nil, nil, err
			}
			for len(words) > 0 && strings.Contains(words[0], "=") {
				env, words = append(env, words[0]), words[1:]
			}
			return env, words, nil
		}
	}
	return nil, nil, errors.New("the Dockerfile's build stage has no go build")
}

// buildLikeDockerfile copies the build context .dockerignore leaves into
// dir and runs the Dockerfile's go build there.
func buildLikeDockerfile(dir string, buildArgs map[string]string) (string, error) {
	stages, err := parseDockerfile()
	if err != nil {
		return "", err
	}
	env, argv, err := goBuild(stages, buildArgs)
	if err != nil {
		return "", err
	}
	if err := copyContext(dir); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "rdev-bin")
	if i := slices.Index(argv, "-o"); i >= 0 && i+1 < len(argv) {
		argv[i+1] = out
	} else {
		return "", fmt.Errorf("go build %q has no -o", argv)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, b)
	}
	return out, nil
}

// copyContext copies the repository into dir less what .dockerignore
// excludes: what `COPY . .` sees.
func copyContext(dir string) error {
	f, err := os.Open(repoPath(".dockerignore"))
	if err != nil {
		return err
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		return err
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return err
	}
	return filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(repoRoot, p)
		if err != nil || rel == "." {
			return err
		}
		if skip, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel)); err != nil || skip {
			if skip && d.IsDir() {
				return filepath.SkipDir
			}
			return err
		}
		target := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return copyFile(p, target)
	})
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// The image: built from the context .dockerignore leaves with the
// Dockerfile's own command, the binary is static with trimmed paths and
// carries the build's version; the default stage is distroless and
// non-root, the worker stage has a shell and is non-root too.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages, err := parseDockerfile()
	if err != nil {
		t.Fatal(err)
	}
	env, argv, err := goBuild(stages, testBuildArgs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("go build env %q: want CGO_ENABLED=0 (a static binary)", env)
	}
	for _, flag := range []string{"-trimpath", "-ldflags", "./cmd/rdev"} {
		if !slices.Contains(argv, flag) {
			t.Errorf("go build %q lacks %s", argv, flag)
		}
	}

	// The test builds from the whole context, as the build stage must.
	build := stages[slices.IndexFunc(stages, func(s stage) bool { return s.name == "build" })]
	if !slices.ContainsFunc(build.instructions("copy"), func(n *parser.Node) bool { return slices.Equal(args(n), []string{".", "."}) }) {
		t.Error("the build stage does not COPY . . (the workspace needs every module)")
	}

	bin := rdevBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a dynamic loader (PT_INTERP): not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("rdev version: %v", err)
	}
	for _, v := range testBuildArgs {
		if !strings.Contains(string(out), v) {
			t.Errorf("rdev version printed %q, without the build's %s", out, v)
		}
	}
	if strings.Contains(string(mustRead(t, bin)), "/work/") {
		t.Error("the binary holds build paths: -trimpath did not apply")
	}

	last := stages[len(stages)-1]
	if !strings.HasPrefix(last.base, "gcr.io/distroless/static") || !strings.HasSuffix(last.base, ":nonroot") {
		t.Errorf("default image base %q: want distroless static, nonroot", last.base)
	}
	for _, s := range stages[1:] {
		users := s.instructions("user")
		if len(users) == 0 {
			t.Errorf("stage %s has no USER: it would run as root", s.name)
			continue
		}
		if u := args(users[len(users)-1])[0]; u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root") {
			t.Errorf("stage %s runs as %s", s.name, u)
		}
		ep := s.instructions("entrypoint")
		if len(ep) != 1 || args(ep[0])[0] != "/usr/local/bin/rdev" {
			t.Errorf("stage %s: entrypoint is not /usr/local/bin/rdev", s.name)
		}
	}
	worker := slices.IndexFunc(stages, func(s stage) bool { return s.name == "worker" })
	if worker < 0 || !strings.Contains(strings.Join(args(stages[worker].instructions("run")[0]), " "), "coreutils") {
		t.Error("no worker stage installing a shell and coreutils for the local executor")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
