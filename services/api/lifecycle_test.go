package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// A batch judges each item: good ones are queued (each with its own
// stream), bad ones come back with their error; JSON arrays and NDJSON
// are the same to it.
func TestBatchSubmit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := `[{"command":["echo","a"],"priority":"high"},{"command":[]},{"prompt":"hi","max_attempts":3},{"command":["true"],"bogus":1},{"command":["x"],"prompt":"y"}]`
	resp, rb := b.post(t, "/v1/projects/demo/batches", "application/json", []byte(body))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("batch: %d %s", resp.StatusCode, rb)
	}
	var r contracts.BatchResponse
	must(t, json.Unmarshal(rb, &r))
	if r.Accepted != 2 || r.Rejected != 3 || len(r.Items) != 5 || r.BatchURL != "/v1/batches/"+r.BatchID ||
		!strings.HasPrefix(r.EventsURL, "/v1/batches/"+r.BatchID+"/events?token=") {
		t.Fatalf("reply %s", rb)
	}
	wantErr := []string{"", "invalid_command", "", "unknown_field", "invalid_item"}
	for i, it := range r.Items {
		got := ""
		if it.Error != nil {
			got = it.Error.Code
		}
		if it.Index != i || got != wantErr[i] || (got == "") != (it.JobID != "") {
			t.Errorf("item %d: %+v, want error %q", i, it, wantErr[i])
		}
	}
	if n := natstest.Msgs(t, b.js, contracts.StreamJobs); n != 2 {
		t.Fatalf("queued %d jobs, want 2", n)
	}
	_, sb := b.get(t, "/v1/batches/"+r.BatchID+"?limit=1")
	var st contracts.BatchStatus
	must(t, json.Unmarshal(sb, &st))
	if st.ID != r.BatchID || st.State != contracts.BatchCommitted || st.Counts[contracts.StatusQueued] != 2 ||
		len(st.Jobs) != 1 || st.Jobs[0].JobID != r.Items[0].JobID || st.Jobs[0].BatchID != r.BatchID || st.NextCursor != "1" {
		t.Fatalf("batch status %s", sb)
	}
	if st.Jobs[0].Priority != contracts.PriorityHigh {
		t.Errorf("item fields not applied: %+v", st.Jobs[0])
	}

	nd := "{\"command\":[\"echo\",\"1\"]}\n\n{\"command\":[\"echo\",\"2\"]}\n"
	resp, rb = b.post(t, "/v1/projects/demo/batches", "application/x-ndjson", []byte(nd))
	must(t, json.Unmarshal(rb, &r))
	if resp.StatusCode != http.StatusAccepted || r.Accepted != 2 || r.Rejected != 0 {
		t.Fatalf("ndjson batch: %d %s", resp.StatusCode, rb)
	}
}

// An atomic batch with one bad item queues nothing and says which item.
func TestAtomicBatchRefusedWhole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, rb := b.post(t, "/v1/projects/demo/batches?atomic=true", "application/json",
		[]byte(`[{"command":["true"]},{"command":["true"],"timeout_seconds":-1}]`))
	if resp.StatusCode != http.StatusBadRequest || errCode(t, rb) != "batch_refused" || !strings.Contains(string(rb), "invalid_timeout") {
		t.Fatalf("atomic batch with a bad item: %d %s", resp.StatusCode, rb)
	}
	if n := natstest.Msgs(t, b.js, contracts.StreamJobs); n != 0 {
		t.Fatalf("queued %d jobs of a refused atomic batch", n)
	}
	resp, rb = b.post(t, "/v1/projects/demo/batches?atomic=true", "application/json", []byte(`[{"command":["true"]},{"command":["true"]}]`))
	var r contracts.BatchResponse
	must(t, json.Unmarshal(rb, &r))
	if resp.StatusCode != http.StatusAccepted || r.Accepted != 2 {
		t.Fatalf("good atomic batch: %d %s", resp.StatusCode, rb)
	}
	// Its jobs are marked atomic and its record committed, so workers run them.
	e, err := b.kv.Get(context.Background(), contracts.BatchKey(r.BatchID))
	must(t, err)
	var rec contracts.Batch
	must(t, json.Unmarshal(e.Value(), &rec))
	if rec.State != contracts.BatchCommitted || !rec.Atomic || len(rec.JobIDs) != 2 {
		t.Fatalf("batch record %+v", rec)
	}
	for _, tc := range []struct{ ctype, body, code string }{
		{"application/json", `[]`, "empty_batch"},
		{"application/json", `{"command":["true"]}`, "invalid_json"},
		{"text/plain", `[]`, "unsupported_media_type"},
	} {
		resp, rb := b.post(t, "/v1/projects/demo/batches", tc.ctype, []byte(tc.body))
		if resp.StatusCode/100 != 4 || errCode(t, rb) != tc.code {
			t.Errorf("%s %s: %d %s, want %s", tc.ctype, tc.body, resp.StatusCode, rb, tc.code)
		}
	}
	big := "[" + strings.Repeat(`{"command":["true"]},`, 10_000) + `{"command":["true"]}]`
	if resp, rb := b.post(t, "/v1/projects/demo/batches", "application/json", []byte(big)); resp.StatusCode != http.StatusRequestEntityTooLarge || errCode(t, rb) != "batch_too_large" {
		t.Errorf("10,001 items: %d %s", resp.StatusCode, rb)
	}
}

// Cancel: a queued job ends cancelled at once with its terminal event; a
// running job gets its request recorded and broadcast on the cancel
// subject; an ended job answers 409.
func TestCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	submit := func() (jobID, streamID string) {
		resp, rb := b.post(t, "/v1/projects/demo/commands", "application/json", []byte(`{"command":["sleep","60"]}`))
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit: %d %s", resp.StatusCode, rb)
		}
		var r contracts.SubmitResponse
		must(t, json.Unmarshal(rb, &r))
		return r.JobID, r.StreamID
	}

	queued, qStream := submit()
	resp, rb := b.post(t, "/v1/jobs/"+queued+"/cancel", "", nil)
	var st contracts.JobState
	must(t, json.Unmarshal(rb, &st))
	if resp.StatusCode != http.StatusOK || st.Status != contracts.StatusCancelled || st.Reason != contracts.ReasonCancelled {
		t.Fatalf("cancel queued: %d %s", resp.StatusCode, rb)
	}
	ctx := context.Background()
	out, err := b.js.Stream(ctx, contracts.StreamOutput)
	must(t, err)
	msg, err := out.GetLastMsgForSubject(ctx, contracts.SubjectEvent("demo", qStream, contracts.EventCancelled))
	must(t, err)
	var ev contracts.Event
	must(t, json.Unmarshal(msg.Data, &ev))
	if ev.JobID != queued || ev.Status != contracts.StatusCancelled {
		t.Fatalf("terminal event %+v", ev)
	}
	if resp, rb := b.post(t, "/v1/jobs/"+queued+"/cancel", "", nil); resp.StatusCode != http.StatusConflict || errCode(t, rb) != "job_finished" {
		t.Fatalf("cancel again: %d %s", resp.StatusCode, rb)
	}

	// A running job: play the worker that claimed it.
	running, _ := submit()
	e, err := b.kv.Get(ctx, contracts.JobKey(running))
	must(t, err)
	var rs contracts.JobState
	must(t, json.Unmarshal(e.Value(), &rs))
	rs.Status, rs.Attempt = contracts.StatusRunning, 1
	nb, _ := json.Marshal(rs)
	_, err = b.kv.Update(ctx, contracts.JobKey(running), nb, e.Revision())
	must(t, err)
	heard := make(chan string, 1)
	sub, err := b.js.Conn().Subscribe(contracts.SubjectCancelPrefix+".*", func(m *nats.Msg) { heard <- m.Subject })
	must(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	must(t, b.js.Conn().Flush())
	resp, rb = b.post(t, "/v1/jobs/"+running+"/cancel", "", nil)
	must(t, json.Unmarshal(rb, &st))
	if resp.StatusCode != http.StatusAccepted || st.Status != contracts.StatusRunning || !st.CancelRequested {
		t.Fatalf("cancel running: %d %s", resp.StatusCode, rb)
	}
	select {
	case s := <-heard:
		if s != contracts.SubjectCancel(running) {
			t.Fatalf("cancel request on %s", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no cancel request published")
	}
	if resp, rb := b.post(t, "/v1/jobs/nope/cancel", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("cancel unknown: %d %s", resp.StatusCode, rb)
	}
	// Another project's key cannot cancel, nor learn the job exists.
	k := b.newKey(t, `{"name":"o","scopes":["project:other:submit"]}`)
	if resp, _ := b.post(t, "/v1/jobs/"+running+"/cancel", "", nil, bearer(k.Key)...); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("cancel by another project's key: %d", resp.StatusCode)
	}
	// A read-only key of the project may see but not cancel it.
	ro := b.newKey(t, `{"name":"r","scopes":["project:demo:read"]}`)
	if resp, _ := b.post(t, "/v1/jobs/"+running+"/cancel", "", nil, bearer(ro.Key)...); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cancel by a read-only key: %d", resp.StatusCode)
	}
}

// Dead letters are listed for admins and retried as new jobs.
func TestDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	code := 3
	for i, dl := range []contracts.DeadLetter{
		{ID: "J1", Job: &contracts.Job{V: 1, ID: "J1", Project: "demo", Kind: contracts.KindExec, Command: []string{"echo", "again"},
			Priority: contracts.PriorityLow, TimeoutSeconds: 60, Attempt: 2, StreamID: "S1", MaxAttempts: 2},
			Reason: contracts.ReasonWorkerLost, Attempts: 2, ExitCode: &code},
		{ID: "42", Raw: []byte("{garbage"), Reason: contracts.ReasonUndecodable},
	} {
		dl.V, dl.Time = contracts.Version, time.Now()
		body, _ := json.Marshal(dl)
		_, err := b.js.Publish(ctx, contracts.SubjectDead([]string{"demo", "_"}[i]), body, jetstream.WithMsgID(dl.ID))
		must(t, err)
	}
	resp, rb := b.get(t, "/v1/dead-letters?limit=1")
	var page contracts.DeadLetterPage
	must(t, json.Unmarshal(rb, &page))
	if resp.StatusCode != http.StatusOK || len(page.DeadLetters) != 1 || page.DeadLetters[0].ID != "J1" || page.NextCursor == "" {
		t.Fatalf("dead letters: %d %s", resp.StatusCode, rb)
	}
	_, rb = b.get(t, "/v1/dead-letters?cursor="+page.NextCursor)
	page.DeadLetters, page.NextCursor = nil, ""
	must(t, json.Unmarshal(rb, &page))
	if len(page.DeadLetters) != 1 || page.DeadLetters[0].ID != "42" || page.NextCursor != "" {
		t.Fatalf("second page: %s", rb)
	}
	before := natstest.Msgs(t, b.js, contracts.StreamJobs)
	resp, rb = b.post(t, "/v1/dead-letters/J1/retry", "", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("retry: %d %s", resp.StatusCode, rb)
	}
	var r contracts.SubmitResponse
	must(t, json.Unmarshal(rb, &r))
	_, jb := b.get(t, "/v1/jobs/"+r.JobID)
	var st contracts.JobState
	must(t, json.Unmarshal(jb, &st))
	if r.JobID == "J1" || st.Status != contracts.StatusQueued || st.Priority != contracts.PriorityLow || st.MaxAttempts != 2 {
		t.Fatalf("retried job %s", jb)
	}
	if n := natstest.Msgs(t, b.js, contracts.StreamJobs); n != before+1 {
		t.Fatalf("retry queued %d jobs", n-before)
	}
	for path, want := range map[string]string{"/v1/dead-letters/42/retry": "dead_letter_undecodable", "/v1/dead-letters/nope/retry": "dead_letter_not_found"} {
		if resp, rb := b.post(t, path, "", nil); errCode(t, rb) != want {
			t.Errorf("%s: %d %s", path, resp.StatusCode, rb)
		}
	}
	k := b.newKey(t, `{"name":"p","scopes":["project:demo:submit","project:demo:read"]}`)
	if resp, _ := b.get(t, "/v1/dead-letters", bearer(k.Key)...); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("dead letters for a project key: %d", resp.StatusCode)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Every terminal event becomes one job_finished audit record, an expired
// job's included, and no other event does.
func TestEveryEndIsAudited(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var ends []string
	for _, et := range contracts.EventTypes() {
		ev := contracts.Event{V: contracts.Version, Type: et, Project: "demo", JobID: "job-" + string(et), StreamID: "s-" + string(et),
			Status: contracts.StatusOf(et), Attempt: 1, Time: time.Now().UTC()}
		data, err := json.Marshal(ev)
		must(t, err)
		_, err = b.js.Publish(ctx, contracts.SubjectEvent(ev.Project, ev.StreamID, et), data)
		must(t, err)
		if et.Terminal() {
			ends = append(ends, ev.JobID)
		}
	}
	var got []string
	await.Within(t, 10*time.Second, "a job_finished record per end", func() bool {
		got = got[:0]
		for _, r := range b.audit(t, "kind=job_finished&limit=100").Records {
			got = append(got, r.JobID)
		}
		return len(got) >= len(ends)
	})
	slices.Sort(got)
	slices.Sort(ends)
	if !slices.Equal(got, ends) {
		t.Fatalf("job_finished records for %v, want %v", got, ends)
	}
}
