package worker_test

import (
	"context"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
)

// gated is an executor whose commands run until the test releases them
// by job id; it reports which jobs are running.
type gated struct {
	mu      sync.Mutex
	running map[string]chan struct{}
	started []string
}

func newGated() *gated { return &gated{running: map[string]chan struct{}{}} }

func (g *gated) Exec(ctx context.Context, spec executor.Spec, _, _ io.Writer) (int, error) {
	release := make(chan struct{})
	g.mu.Lock()
	g.running[spec.JobID] = release
	g.started = append(g.started, spec.JobID)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.running, spec.JobID)
		g.mu.Unlock()
	}()
	select {
	case <-release:
		return 0, nil
	case <-ctx.Done():
		return -1, context.Cause(ctx)
	}
}

// now returns the ids of the running jobs not yet released, sorted.
func (g *gated) now() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ids := make([]string, 0, len(g.running))
	for id := range g.running {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (g *gated) release(t *testing.T, id string) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	ch, ok := g.running[id]
	if !ok {
		t.Fatalf("job %s is not running", id)
	}
	close(ch)
	// Released: no longer counted as running, though its Exec may not
	// have returned yet.
	delete(g.running, id)
}

// A high-priority job starts while lower ones fill every Concurrency
// slot, in a slot kept for high priority: the dispatcher takes it when it
// arrives, without waiting for a slot to free. Lower levels never use
// that slot, however many of their jobs wait.
func TestHighSlotRunsHighJobsOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	g := newGated()
	b.start(worker.WithExecutor(worker.Config{Concurrency: 2, HighSlots: 1}, g))
	submit := func(id string, p contracts.Priority) {
		j := newJob(id, "slots", "true")
		j.Priority = p
		b.submit(t, j)
	}
	for _, id := range []string{"low1", "low2", "low3"} {
		submit(id, contracts.PriorityLow)
	}
	submit("normal1", contracts.PriorityNormal)
	await.Until(t, "two lower jobs running", func() bool { return len(g.now()) == 2 })

	// If a lower job had taken the high slot, every slot would be full and
	// this job could not start until one of them is released.
	submit("high1", contracts.PriorityHigh)
	await.Until(t, "the high job running beside two lower ones", func() bool { return slices.Contains(g.now(), "high1") })
	if got := g.now(); len(got) != 3 {
		t.Fatalf("running %v, want the high job and two lower ones", got)
	}

	// A lower job that ends frees a Concurrency slot, which the next
	// lower job takes; the high slot stays with high1.
	first := slices.DeleteFunc(g.now(), func(id string) bool { return id == "high1" })[0]
	g.release(t, first)
	await.Until(t, "the next lower job running", func() bool {
		now := g.now()
		return len(now) == 3 && !slices.Contains(now, first)
	})

	// Once high1 ends, the high slot takes the next high job, and still
	// no lower one.
	g.release(t, "high1")
	b.next(t, "high1", contracts.EventSucceeded)
	submit("high2", contracts.PriorityHigh)
	await.Until(t, "the second high job running", func() bool { return slices.Contains(g.now(), "high2") })
	if got := g.now(); len(got) != 3 {
		t.Fatalf("running %v, want the second high job and two lower ones", got)
	}

	for _, id := range g.now() {
		g.release(t, id)
	}
	// The remaining lower job runs once a Concurrency slot frees.
	await.Until(t, "every job started", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.started) == 6
	})
	for _, id := range g.now() {
		g.release(t, id)
	}
	b.waitQueueEmpty(t)
}

// The worker runs local jobs with the niceness configured for their
// priority (JobNice): a low job reads its own in /proc while it runs.
func TestJobNiceReachesLocalJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	own, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	b.start(worker.Config{JobNice: map[contracts.Priority]int{contracts.PriorityLow: 5}})
	for _, c := range []struct {
		id   string
		p    contracts.Priority
		plus int
	}{{"nicelow", contracts.PriorityLow, 5}, {"nicehigh", contracts.PriorityHigh, 0}} {
		j := newJob(c.id, "nice", "sh", "-c", "cat /proc/$$/stat")
		j.Priority = c.p
		b.submit(t, j)
		b.next(t, c.id, contracts.EventSucceeded)
		line := b.storedLines(t, j.StreamID, 1)[0].Text
		if got, want := statNice(t, line), min(statNice(t, string(own))+c.plus, 19); got != want {
			t.Errorf("%s job ran at niceness %d, want %d", c.p, got, want)
		}
	}
}

// statNice returns the niceness field of a /proc/<pid>/stat line.
func statNice(t *testing.T, stat string) int {
	t.Helper()
	_, rest, ok := strings.Cut(stat, ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 17 {
		t.Fatalf("unexpected stat line %q", stat)
	}
	n, err := strconv.Atoi(f[16])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A priority capped by PrioritySlots never runs more jobs at once than
// its cap, however many slots are free, and the other levels take those
// slots; when a capped job ends, the next one of its level starts.
func TestPrioritySlotsCapALevel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	g := newGated()
	b.start(worker.WithExecutor(worker.Config{Concurrency: 3,
		PrioritySlots: map[contracts.Priority]int{contracts.PriorityLow: 1}}, g))
	submit := func(id string, p contracts.Priority) {
		j := newJob(id, "capped", "true")
		j.Priority = p
		b.submit(t, j)
	}
	lows := func() (ids []string) {
		for _, id := range g.now() {
			if strings.HasPrefix(id, "low") {
				ids = append(ids, id)
			}
		}
		return ids
	}
	for _, id := range []string{"low1", "low2", "low3"} {
		submit(id, contracts.PriorityLow)
	}
	await.Until(t, "a low job running", func() bool { return len(lows()) == 1 })
	// Had the low level taken the two free slots, these could not start.
	submit("normal1", contracts.PriorityNormal)
	submit("normal2", contracts.PriorityNormal)
	await.Until(t, "both normal jobs running", func() bool {
		now := g.now()
		return slices.Contains(now, "normal1") && slices.Contains(now, "normal2")
	})
	if got := lows(); len(got) != 1 {
		t.Fatalf("low jobs running %v, want one (the cap)", got)
	}
	// The low job's end frees its level's only place: the next low starts.
	first := lows()[0]
	g.release(t, first)
	await.Until(t, "the next low job running", func() bool {
		l := lows()
		return len(l) == 1 && l[0] != first
	})
	await.Until(t, "every job run, never two low ones at once", func() bool {
		if l := lows(); len(l) > 1 {
			t.Fatalf("low jobs running %v, want at most one", l)
		}
		for _, id := range g.now() {
			g.release(t, id)
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.started) == 5 && len(g.running) == 0
	})
	b.waitQueueEmpty(t)
}
