package localexec_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
	"github.com/rdev-dev/rdev/services/worker/internal/localexec"
)

// niceOf returns the niceness field of a /proc/<pid>/stat line.
func niceOf(t *testing.T, stat string) int {
	t.Helper()
	// The command name may hold spaces; the fields after it do not.
	_, rest, ok := strings.Cut(stat, ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 17 {
		t.Fatalf("unexpected stat line %q", stat)
	}
	n, err := strconv.Atoi(f[16]) // field 19: nice
	if err != nil {
		t.Fatalf("stat line %q: %v", stat, err)
	}
	return n
}

func ownNice(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	return niceOf(t, string(b))
}

// A job of a level with a niceness runs with it from its first
// instruction, and so do the processes it starts; a level without one runs
// at the worker's. The worker's own threads keep their niceness.
func TestNicePerPriority(t *testing.T) {
	t.Parallel()
	base := ownNice(t)
	ex := newExecutor(t, localexec.Config{Nice: map[contracts.Priority]int{contracts.PriorityLow: 7, contracts.PriorityNormal: 3}})
	// The job's leader (the shell, $$) and a process it forks (cat) read
	// their own /proc/<pid>/stat while they run.
	script := []string{"sh", "-c", "cat /proc/$$/stat; cat /proc/self/stat"}
	for _, c := range []struct {
		p    contracts.Priority
		want int
	}{
		{contracts.PriorityLow, min(base+7, 19)},
		{contracts.PriorityNormal, min(base+3, 19)},
		{"", min(base+3, 19)}, // "" is normal
		{contracts.PriorityHigh, base},
	} {
		code, stdout, _, err := exec(t, ex, executor.Spec{Project: "demo", Command: script, Priority: c.p})
		if err != nil || code != 0 {
			t.Fatalf("%q: exit %d, %v", c.p, code, err)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if len(lines) != 2 {
			t.Fatalf("%q: output %q, want two stat lines", c.p, stdout)
		}
		for i, who := range []string{"job", "its child"} {
			if got := niceOf(t, lines[i]); got != c.want {
				t.Errorf("priority %q: %s runs at niceness %d, want %d", c.p, who, got, c.want)
			}
		}
	}
	// The thread each niced job was started from is gone: no thread of
	// this process runs niced.
	await.Until(t, "every thread of the worker at its own niceness", func() bool {
		tasks, err := filepath.Glob("/proc/self/task/*/stat")
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil {
				continue // the thread ended meanwhile
			}
			if niceOf(t, string(b)) != base {
				return false
			}
		}
		return true
	})
}

func TestNiceValidation(t *testing.T) {
	t.Parallel()
	for _, nice := range []map[contracts.Priority]int{
		{contracts.PriorityLow: -1},
		{contracts.PriorityLow: 20},
		{"urgent": 5},
	} {
		if _, err := localexec.New(localexec.Config{Root: t.TempDir(), Nice: nice}); err == nil {
			t.Errorf("New accepted Nice %v", nice)
		}
	}
}
