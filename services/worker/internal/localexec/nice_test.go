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

// Fields of a /proc/<pid>/stat line, numbered as in proc(5).
const (
	fieldNice   = 19
	fieldPolicy = 41 // 0 SCHED_OTHER, 5 SCHED_IDLE
)

// statField returns field n (from 3 on) of a /proc/<pid>/stat line.
func statField(t *testing.T, stat string, n int) int {
	t.Helper()
	// The command name may hold spaces; the fields after it do not.
	_, rest, ok := strings.Cut(stat, ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < n-2 {
		t.Fatalf("unexpected stat line %q", stat)
	}
	v, err := strconv.Atoi(f[n-3])
	if err != nil {
		t.Fatalf("stat line %q: %v", stat, err)
	}
	return v
}

func ownNice(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	return statField(t, string(b), fieldNice)
}

// levelWant is the value of a stat field a job of a priority must have.
type levelWant struct {
	p    contracts.Priority
	want int
}

// checkLevels runs a job of each level that reads the stat lines of its
// leader (the shell, $$) and of a process it forks (cat) while they run,
// and checks their field; then, that every thread of this process has
// threadsWant there: the thread each job was started from is gone.
func checkLevels(t *testing.T, ex *localexec.Executor, field int, levels []levelWant, threadsWant int) {
	t.Helper()
	script := []string{"sh", "-c", "cat /proc/$$/stat; cat /proc/self/stat"}
	for _, c := range levels {
		code, stdout, _, err := exec(t, ex, executor.Spec{Project: "demo", Command: script, Priority: c.p})
		if err != nil || code != 0 {
			t.Fatalf("%q: exit %d, %v", c.p, code, err)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if len(lines) != 2 {
			t.Fatalf("%q: output %q, want two stat lines", c.p, stdout)
		}
		for i, who := range []string{"job", "its child"} {
			if got := statField(t, lines[i], field); got != c.want {
				t.Errorf("priority %q: %s has %d in stat field %d, want %d", c.p, who, got, field, c.want)
			}
		}
	}
	await.Until(t, "every thread of the worker back as it was", func() bool {
		tasks, err := filepath.Glob("/proc/self/task/*/stat")
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil {
				continue // the thread ended meanwhile
			}
			if statField(t, string(b), field) != threadsWant {
				return false
			}
		}
		return true
	})
}

// A job of a level with a niceness runs with it from its first
// instruction, and so do the processes it starts; a level without one runs
// at the worker's. The worker's own threads keep their niceness.
func TestNicePerPriority(t *testing.T) {
	t.Parallel()
	base := ownNice(t)
	ex := newExecutor(t, localexec.Config{Nice: map[contracts.Priority]int{contracts.PriorityLow: 7, contracts.PriorityNormal: 3}})
	checkLevels(t, ex, fieldNice, []levelWant{
		{contracts.PriorityLow, min(base+7, 19)},
		{contracts.PriorityNormal, min(base+3, 19)},
		{"", min(base+3, 19)}, // "" is normal
		{contracts.PriorityHigh, base},
	}, base)
}

// A job of a level set to NiceIdle runs in SCHED_IDLE from its first
// instruction, and so do the processes it starts; other levels and the
// worker's own threads stay in the normal class.
func TestNiceIdlePerPriority(t *testing.T) {
	t.Parallel()
	const other, idle = 0, 5
	ex := newExecutor(t, localexec.Config{Nice: map[contracts.Priority]int{contracts.PriorityLow: localexec.NiceIdle}})
	checkLevels(t, ex, fieldPolicy, []levelWant{
		{contracts.PriorityLow, idle},
		{contracts.PriorityNormal, other},
		{contracts.PriorityHigh, other},
	}, other)
}

func TestNiceValidation(t *testing.T) {
	t.Parallel()
	for _, nice := range []map[contracts.Priority]int{
		{contracts.PriorityLow: -1},
		{contracts.PriorityLow: 21},
		{"urgent": 5},
	} {
		if _, err := localexec.New(localexec.Config{Root: t.TempDir(), Nice: nice}); err == nil {
			t.Errorf("New accepted Nice %v", nice)
		}
	}
}
