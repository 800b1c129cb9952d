package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api"
)

// clock is a time the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time)         { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// t0 is a whole hour, so every-minute and every-two-minute times fall on
// known offsets from it.
var t0 = time.Date(2030, 1, 7, 10, 0, 0, 0, time.UTC)

// replicas serves n API replicas on one NATS, all on clk; the bundle
// talks to the first. Their schedulers are swept by the test, not by
// their loops.
func replicas(t *testing.T, n int, clk *clock) (bundle, []*api.Scheduler, []*api.Service) {
	t.Helper()
	_, _, js := natstest.Provisioned(t)
	var scheds []*api.Scheduler
	var apis []*api.Service
	for range n {
		cfg := api.Config{MaxBodyBytes: 64 << 10, MaxTimeout: time.Hour, BootstrapKey: adminKey}
		deps := apiDeps(t, cfg, js, slog.New(slog.DiscardHandler))
		deps.Clock = clk.Now
		a, err := api.New(cfg, deps)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
		if err := a.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		apis, scheds = append(apis, a), append(scheds, a.Scheduler(0))
	}
	e := echo.New()
	apis[0].Register(e)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	kv, err := js.KeyValue(t.Context(), contracts.BucketState)
	must(t, err)
	b := bundle{url: srv.URL, js: js, kv: kv, admin: adminKey, http: &http.Client{Transport: openapitest.Transport(t, nil)}}
	if resp, body := b.post(t, "/v1/projects", "application/json", []byte(`{"id":"demo"}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create project: %d %s", resp.StatusCode, body)
	}
	return b, scheds, apis
}

func createSchedule(t *testing.T, b bundle, body string) contracts.ScheduleResponse {
	t.Helper()
	resp, rb := b.post(t, "/v1/projects/demo/schedules", "application/json", []byte(body))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create schedule: %d %s", resp.StatusCode, rb)
	}
	return decodeJSON[contracts.ScheduleResponse](t, rb)
}

func getSchedule(t *testing.T, b bundle, id string) contracts.ScheduleResponse {
	t.Helper()
	resp, rb := b.get(t, "/v1/projects/demo/schedules/"+id)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("get schedule: %d %s", resp.StatusCode, rb)
	}
	return decodeJSON[contracts.ScheduleResponse](t, rb)
}

func decodeJSON[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func sweep(t *testing.T, scheds ...*api.Scheduler) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(scheds))
	for i, s := range scheds {
		wg.Go(func() { errs[i] = s.Sweep(t.Context()) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// queuedJobs counts the job messages of project demo at priority normal.
func queuedJobs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), contracts.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	subj := contracts.SubjectJob(contracts.PriorityNormal, "demo")
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

// Three replicas sweep an every-minute schedule at once for an hour of
// the test's clock, one of them stopped halfway: every minute became
// exactly one job, whose id names the minute, and no job message was
// queued twice.
func TestScheduleFiresEveryTimeOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	b, scheds, apis := replicas(t, 3, clk)
	sc := createSchedule(t, b, `{"name":"minutely","cron":"* * * * *","job":{"command":["true"]}}`)
	if len(sc.NextRuns) != 5 || !sc.NextRuns[0].Equal(t0.Add(time.Minute)) {
		t.Fatalf("next runs %v", sc.NextRuns)
	}
	live := scheds
	for i := 1; i <= 60; i++ {
		clk.Set(t0.Add(time.Duration(i) * time.Minute))
		if i == 30 {
			must(t, live[2].Shutdown(t.Context()))
			must(t, apis[2].Shutdown(t.Context()))
			live = live[:2]
		}
		sweep(t, live...)
	}
	for i := 1; i <= 60; i++ {
		id := contracts.ScheduleJobID(sc.ID, t0.Add(time.Duration(i)*time.Minute), false)
		if resp, rb := b.get(t, "/v1/jobs/"+id); resp.StatusCode != http.StatusOK {
			t.Fatalf("minute %d: job %s: %d %s", i, id, resp.StatusCode, rb)
		}
	}
	if n := queuedJobs(t, b.js); n != 60 {
		t.Fatalf("%d job messages queued for 60 minutes", n)
	}
	got := getSchedule(t, b, sc.ID)
	if !got.Next.Equal(t0.Add(61*time.Minute)) || len(got.Runs) != 20 {
		t.Fatalf("next %s, %d runs", got.Next, len(got.Runs))
	}
	for i, r := range got.Runs {
		at := t0.Add(time.Duration(41+i) * time.Minute)
		if !r.ScheduledAt.Equal(at) || r.Outcome != contracts.RunQueued || r.JobID != contracts.ScheduleJobID(sc.ID, at, false) ||
			r.Status != contracts.StatusQueued {
			t.Fatalf("run %d: %+v, want the job of %s queued", i, r, at)
		}
	}
}

// After an outage of the schedulers (the clock moved on 11.5 minutes
// with no sweep), catch_up decides what of the 5 missed times runs.
func TestScheduleCatchUpAfterOutage(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	b, scheds, _ := replicas(t, 1, clk)
	ids := map[string]string{}
	for _, policy := range []string{"none", "one", "all"} {
		ids[policy] = createSchedule(t, b, `{"name":"`+policy+`","cron":"*/2 * * * *","catch_up":"`+policy+`","job":{"command":["true"]}}`).ID
	}
	sweep(t, scheds...) // nothing due yet
	clk.Advance(11*time.Minute + 30*time.Second)
	sweep(t, scheds...)
	for policy, want := range map[string][]int{"none": nil, "one": {10}, "all": {2, 4, 6, 8, 10}} {
		got := getSchedule(t, b, ids[policy])
		var fired []int
		missed := 0
		for _, r := range got.Runs {
			switch r.Outcome {
			case contracts.RunQueued:
				fired = append(fired, int(r.ScheduledAt.Sub(t0)/time.Minute))
			case contracts.RunMissed:
				missed++
			}
		}
		if !slices.Equal(fired, want) || missed != 5-len(want) || !got.Next.Equal(t0.Add(12*time.Minute)) {
			t.Errorf("catch_up %s: fired minutes %v, %d missed, next %s; want %v", policy, fired, missed, got.Next, want)
		}
	}
	if n := queuedJobs(t, b.js); n != 6 {
		t.Fatalf("%d jobs queued, want 6", n)
	}
}

// A run while the previous run's job has not ended (no worker runs here,
// so it stays queued) follows the overlap policy.
func TestScheduleOverlap(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	b, scheds, _ := replicas(t, 1, clk)
	ids := map[string]string{}
	for _, policy := range []string{"allow", "skip", "cancel_previous"} {
		ids[policy] = createSchedule(t, b, `{"name":"`+policy+`","cron":"* * * * *","overlap":"`+policy+`","job":{"command":["true"]}}`).ID
	}
	for i := 1; i <= 2; i++ {
		clk.Set(t0.Add(time.Duration(i) * time.Minute))
		sweep(t, scheds...)
	}
	outcomes := func(id string) string {
		var out []string
		for _, r := range getSchedule(t, b, id).Runs {
			out = append(out, fmt.Sprintf("%s/%s", r.Outcome, r.Status))
		}
		return fmt.Sprint(out)
	}
	for policy, want := range map[string]string{
		"allow":           "[queued/queued queued/queued]",
		"skip":            "[queued/queued skipped/]",
		"cancel_previous": "[queued/cancelled queued/queued]",
	} {
		if got := outcomes(ids[policy]); got != want {
			t.Errorf("overlap %s: runs %s, want %s", policy, got, want)
		}
	}
}

// The schedule endpoints: create, read, change, pause, resume, trigger,
// delete, each audited; bad input refused with its code.
func TestScheduleEndpoints(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	b, _, _ := replicas(t, 1, clk)
	for _, c := range []struct{ body, code string }{
		{`{"name":"x","cron":"* * *","job":{"command":["true"]}}`, "invalid_cron"},
		{`{"name":"x","cron":"0 0 31 2 *","job":{"command":["true"]}}`, "invalid_cron"},
		{`{"name":"x","cron":"@every 5s","job":{"command":["true"]}}`, "invalid_cron"},
		{`{"name":"x","cron":"@daily","timezone":"Moon/Base","job":{"command":["true"]}}`, "invalid_timezone"},
		{`{"name":"x","cron":"@daily","overlap":"sometimes","job":{"command":["true"]}}`, "invalid_overlap"},
		{`{"name":"x","cron":"@daily","catch_up":"most","job":{"command":["true"]}}`, "invalid_catch_up"},
		{`{"name":"x","cron":"@daily"}`, "invalid_job"},
		{`{"name":"x","cron":"@daily","job":{"command":["true"],"run_in_seconds":5}}`, "invalid_job"},
		{`{"name":"x","cron":"@daily","job":{"command":[]}}`, "invalid_command"},
		{`{"name":"","cron":"@daily","job":{"command":["true"]}}`, "invalid_name"},
	} {
		resp, rb := b.post(t, "/v1/projects/demo/schedules", "application/json", []byte(c.body))
		if got := decodeJSON[contracts.ErrorBody](t, rb).Error.Code; resp.StatusCode != http.StatusBadRequest || got != c.code {
			t.Errorf("%s: %d %s, want 400 %s", c.body, resp.StatusCode, rb, c.code)
		}
	}
	sc := createSchedule(t, b, `{"name":"nightly","cron":"30 2 * * *","timezone":"Europe/Berlin","job":{"command":["make","nightly"]}}`)
	if want := time.Date(2030, 1, 8, 1, 30, 0, 0, time.UTC); len(sc.NextRuns) != 5 || !sc.NextRuns[0].Equal(want) {
		t.Fatalf("next runs %v, want from %s", sc.NextRuns, want)
	}
	resp, rb := b.do(t, http.MethodPatch, "/v1/projects/demo/schedules/"+sc.ID, "application/json", []byte(`{"cron":"@hourly","timezone":""}`))
	if got := decodeJSON[contracts.ScheduleResponse](t, rb); resp.StatusCode != http.StatusOK || !got.Next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("patch: %d %s", resp.StatusCode, rb)
	}
	resp, rb = b.post(t, "/v1/projects/demo/schedules/"+sc.ID+"/pause", "", nil)
	if got := decodeJSON[contracts.ScheduleResponse](t, rb); resp.StatusCode != http.StatusOK || !got.Paused || len(got.NextRuns) != 0 {
		t.Fatalf("pause: %d %s", resp.StatusCode, rb)
	}
	resp, rb = b.post(t, "/v1/projects/demo/schedules/"+sc.ID+"/trigger", "", nil)
	run := decodeJSON[contracts.ScheduleRun](t, rb)
	if resp.StatusCode != http.StatusAccepted || run.JobID != contracts.ScheduleJobID(sc.ID, t0, true) || !run.Manual {
		t.Fatalf("trigger: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.get(t, "/v1/jobs/"+run.JobID); resp.StatusCode != http.StatusOK {
		t.Fatalf("triggered job: %d %s", resp.StatusCode, rb)
	}
	resp, rb = b.post(t, "/v1/projects/demo/schedules/"+sc.ID+"/resume", "", nil)
	if got := decodeJSON[contracts.ScheduleResponse](t, rb); resp.StatusCode != http.StatusOK || got.Paused || len(got.Runs) != 1 {
		t.Fatalf("resume: %d %s", resp.StatusCode, rb)
	}
	resp, rb = b.get(t, "/v1/projects/demo/schedules")
	if l := decodeJSON[contracts.ScheduleList](t, rb); resp.StatusCode != http.StatusOK || len(l.Schedules) != 1 || l.Schedules[0].Cron != "@hourly" {
		t.Fatalf("list: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.do(t, http.MethodDelete, "/v1/projects/demo/schedules/"+sc.ID, "", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d %s", resp.StatusCode, rb)
	}
	resp, rb = b.get(t, "/v1/projects/demo/schedules/"+sc.ID)
	if got := decodeJSON[contracts.ErrorBody](t, rb).Error.Code; resp.StatusCode != http.StatusNotFound || got != "schedule_not_found" {
		t.Fatalf("get deleted: %d %s", resp.StatusCode, rb)
	}
	for _, kind := range []contracts.AuditKind{contracts.AuditScheduleCreated, contracts.AuditScheduleUpdated,
		contracts.AuditScheduleTriggered, contracts.AuditScheduleDeleted} {
		if !audited(t, b, kind) {
			t.Errorf("no %s audit record", kind)
		}
	}
}

// audited polls the project's audit log for a record of kind (records
// are written asynchronously).
func audited(t *testing.T, b bundle, kind contracts.AuditKind) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return await.Poll(ctx, func() bool {
		_, rb := b.get(t, "/v1/projects/demo/audit?kind="+string(kind))
		return len(decodeJSON[contracts.AuditPage](t, rb).Records) > 0
	}) == nil
}

// A delayed job is one of its project's pending jobs: deleting the
// project cancels it while it is scheduled.
func TestDeletingProjectCancelsDelayedJob(t *testing.T) {
	t.Parallel()
	b, _, _ := replicas(t, 1, &clock{now: time.Now()})
	resp, rb := b.post(t, "/v1/projects/demo/commands", "application/json", []byte(`{"command":["true"],"run_in_seconds":3600}`))
	r := decodeJSON[contracts.SubmitResponse](t, rb)
	if resp.StatusCode != http.StatusAccepted || r.Status != contracts.StatusScheduled {
		t.Fatalf("submit: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.do(t, http.MethodDelete, "/v1/projects/demo", "", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete project: %d %s", resp.StatusCode, rb)
	}
	st, err := b.kv.Get(t.Context(), contracts.JobKey(r.JobID))
	must(t, err)
	if got := decodeJSON[contracts.JobState](t, st.Value()); got.Status != contracts.StatusCancelled {
		t.Fatalf("delayed job of the deleted project: %s", got.Status)
	}
}

// A schedule acts for the key that created it: once that key is revoked
// its runs are refused (recorded, not queued); once its project is
// deleted, the schedule goes.
func TestScheduleFollowsItsKeyAndProject(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	b, scheds, _ := replicas(t, 1, clk)
	k := b.newKey(t, `{"name":"ci","scopes":["project:demo:submit","project:demo:read"]}`)
	resp, rb := b.post(t, "/v1/projects/demo/schedules", "application/json",
		[]byte(`{"name":"ci","cron":"* * * * *","job":{"command":["true"]}}`), "Authorization", "Bearer "+k.Key)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create as ci key: %d %s", resp.StatusCode, rb)
	}
	sc := decodeJSON[contracts.ScheduleResponse](t, rb)
	if resp, rb := b.do(t, http.MethodDelete, "/v1/keys/"+k.ID, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, rb)
	}
	clk.Set(t0.Add(time.Minute))
	sweep(t, scheds...)
	got := getSchedule(t, b, sc.ID)
	if len(got.Runs) != 1 || got.Runs[0].Outcome != contracts.RunRefused || got.Runs[0].JobID != "" {
		t.Fatalf("runs after the key was revoked: %+v", got.Runs)
	}

	if resp, rb := b.do(t, http.MethodDelete, "/v1/projects/demo", "", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete project: %d %s", resp.StatusCode, rb)
	}
	clk.Set(t0.Add(2 * time.Minute))
	sweep(t, scheds...)
	kv, err := b.js.KeyValue(t.Context(), contracts.BucketQueues)
	must(t, err)
	if _, err := kv.Get(t.Context(), contracts.ScheduleKey("demo", sc.ID)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("schedule of the deleted project: %v, want it deleted", err)
	}
}

// One pass moves a schedule past an outage of any length: catch_up one
// fires the latest missed time once, not once per ScheduleMaxCatchUp.
func TestScheduleCatchUpOneAfterLongOutage(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	b, scheds, _ := replicas(t, 1, clk)
	sc := createSchedule(t, b, `{"name":"hourly","cron":"0 * * * *","catch_up":"one","job":{"command":["true"]}}`)
	clk.Advance(300*time.Hour + 30*time.Minute)
	sweep(t, scheds...)
	got := getSchedule(t, b, sc.ID)
	last := got.Runs[len(got.Runs)-1]
	if !got.Next.Equal(t0.Add(301*time.Hour)) || last.Outcome != contracts.RunQueued || !last.ScheduledAt.Equal(t0.Add(300*time.Hour)) {
		t.Fatalf("next %s, last run %+v; want next %s and the run of %s queued", got.Next, last, t0.Add(301*time.Hour), t0.Add(300*time.Hour))
	}
	if n := queuedJobs(t, b.js); n != 1 {
		t.Fatalf("%d jobs queued, want 1", n)
	}
}

// A schedule keeps its job's env values so its runs can submit them, but
// no answer shows them: a key that may read the project is not thereby
// shown values its submitter set (they appear as contracts.Redacted, as
// in dead letters and audit records). The run's job still carries them.
func TestScheduleAnswersRedactEnvValues(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	b, _, _ := replicas(t, 1, clk)
	const value = "env-value-7f3a9c"
	sc := createSchedule(t, b, `{"name":"env","cron":"@daily","job":{"command":["true"],"env":{"TOKEN":"`+value+`"}}}`)
	base := "/v1/projects/demo/schedules/"
	answers := map[string][]byte{}
	_, answers["list"] = b.get(t, "/v1/projects/demo/schedules")
	_, answers["get"] = b.get(t, base+sc.ID)
	_, answers["patch"] = b.do(t, http.MethodPatch, base+sc.ID, "application/json", []byte(`{"name":"env2"}`))
	_, answers["pause"] = b.post(t, base+sc.ID+"/pause", "", nil)
	_, answers["resume"] = b.post(t, base+sc.ID+"/resume", "", nil)
	if sc.Job.Env["TOKEN"].Value != contracts.Redacted {
		t.Errorf("create answered env %v, want TOKEN redacted", sc.Job.Env)
	}
	for name, body := range answers {
		if bytes.Contains(body, []byte(value)) {
			t.Errorf("%s answer shows the env value: %s", name, body)
		}
		if !bytes.Contains(body, []byte(`"TOKEN":"`+contracts.Redacted+`"`)) {
			t.Errorf("%s answer lost the env name: %s", name, body)
		}
	}
	resp, rb := b.post(t, base+sc.ID+"/trigger", "", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("trigger: %d %s", resp.StatusCode, rb)
	}
	s, err := b.js.Stream(t.Context(), contracts.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(t.Context(), contracts.SubjectJob(contracts.PriorityNormal, "demo"))
	if err != nil {
		t.Fatal(err)
	}
	var job contracts.Job
	if err := json.Unmarshal(msg.Data, &job); err != nil || job.Env["TOKEN"] != value {
		t.Fatalf("the run's job carries env %v (%v), want the value set", job.Env, err)
	}
}
