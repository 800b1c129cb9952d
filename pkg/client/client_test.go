package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest"
)

// project creates a project named for the test.
func project(t *testing.T, c *client.Client, id string) {
	t.Helper()
	p, err := c.CreateProject(ctx(t), contracts.ProjectRequest{ID: id})
	if err != nil {
		t.Fatalf("create project %s: %v", id, err)
	}
	if p.ID != id || p.Incarnation == "" {
		t.Fatalf("created project %+v", p)
	}
}

// follow reads a stream to its complete event and returns every event's
// name with, for output, the line's seq.
func follow(t *testing.T, s *client.Stream) (lines []uint64, last client.Event, complete contracts.Event) {
	t.Helper()
	defer s.Close()
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			return lines, last, complete
		}
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		switch ev.Name {
		case contracts.SSEOutput:
			l, err := ev.Line()
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, l.Seq)
		case contracts.SSEComplete:
			if complete, err = ev.Status(); err != nil {
				t.Fatal(err)
			}
		}
		last = ev
	}
}

func TestSubmitGetCancel(t *testing.T) {
	t.Parallel()
	c := newClient(t, adminKey)
	project(t, c, "submit-get-cancel")

	sub, err := c.SubmitCommand(ctx(t), "submit-get-cancel", contracts.CommandRequest{Command: []string{"sleep", "60"},
		SubmitOptions: contracts.SubmitOptions{Env: map[string]contracts.EnvValue{"A": {Value: "1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if sub.JobID == "" || sub.Status != contracts.StatusQueued || sub.JobURL != "/v1/jobs/"+sub.JobID {
		t.Fatalf("submit reply %+v", sub)
	}
	got, err := c.Job(ctx(t), sub.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if got.JobID != sub.JobID || got.StreamID != sub.StreamID || got.Project != "submit-get-cancel" || got.EventsURL == "" {
		t.Fatalf("job %+v", got)
	}
	if _, err := c.Cancel(ctx(t), sub.JobID); err != nil {
		t.Fatal(err)
	}
	// The stream ends with the job: cancelled.
	s, err := c.Follow(ctx(t), sub.EventsURL, client.FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, end := follow(t, s); end.Status != contracts.StatusCancelled {
		t.Fatalf("job ended %s, want cancelled", end.Status)
	}
	// A job that ended cannot be cancelled again.
	_, err = c.Cancel(ctx(t), sub.JobID)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusConflict {
		t.Fatalf("second cancel: %v, want a 409 *client.Error", err)
	}
}

func TestErrorsAreTyped(t *testing.T) {
	t.Parallel()
	c := newClient(t, adminKey)
	project(t, c, "typed-errors")
	for _, tc := range []struct {
		name   string
		call   func() error
		status int
		code   string
	}{
		{"bad request", func() error {
			_, err := c.SubmitCommand(ctx(t), "typed-errors", contracts.CommandRequest{Command: []string{"true"},
				SubmitOptions: contracts.SubmitOptions{Priority: "urgent"}})
			return err
		}, http.StatusBadRequest, "invalid_priority"},
		{"unauthorized", func() error {
			_, err := newClient(t, "not-a-key").Projects(ctx(t))
			return err
		}, http.StatusUnauthorized, "invalid_api_key"},
		{"no key", func() error {
			_, err := newClient(t, "").Job(ctx(t), "whatever")
			return err
		}, http.StatusUnauthorized, "missing_api_key"},
		{"job not found", func() error {
			_, err := c.Job(ctx(t), "no-such-job")
			return err
		}, http.StatusNotFound, "job_not_found"},
		{"project not found", func() error {
			_, err := c.SubmitCommand(ctx(t), "no-such-project", contracts.CommandRequest{Command: []string{"true"}})
			return err
		}, http.StatusNotFound, "project_not_found"},
		{"stream not found", func() error {
			_, err := c.Follow(ctx(t), client.StreamEventsURL("no-such-stream"), client.FollowOptions{})
			return err
		}, http.StatusNotFound, "stream_not_found"},
		{"conflict", func() error {
			_, err := c.CreateProject(ctx(t), contracts.ProjectRequest{ID: "typed-errors"})
			return err
		}, http.StatusConflict, "project_exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != tc.status || ce.Code != tc.code || ce.Message == "" {
				t.Fatalf("got %v, want a %d %s *client.Error", err, tc.status, tc.code)
			}
			if !client.IsCode(err, tc.code) {
				t.Errorf("IsCode(%v, %q) = false", err, tc.code)
			}
		})
	}
}

// A stream cut mid-event, twice, resumes with Last-Event-ID: every line
// arrives once, in order.
func TestFollowResumesAcrossDisconnects(t *testing.T) {
	t.Parallel()
	c := newClient(t, adminKey)
	project(t, c, "follow-resume")
	const n = 400
	sub, err := c.SubmitCommand(ctx(t), "follow-resume", contracts.CommandRequest{Command: []string{"seq", "1", fmt.Sprint(n)}})
	if err != nil {
		t.Fatal(err)
	}
	cut := &cutTransport{n: 4000}
	cut.cuts.Store(2)
	s, err := newClient(t, adminKey, client.WithHTTPClient(&http.Client{Transport: openapitest.Transport(t, cut)})).Follow(ctx(t), sub.EventsURL, client.FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lines, last, end := follow(t, s)
	if s.Reconnects() != 2 {
		t.Errorf("%d reconnects, want 2 (one per cut)", s.Reconnects())
	}
	want := make([]uint64, n)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("got %d lines %v…, want 1..%d once each", len(lines), lines[:min(len(lines), 10)], n)
	}
	if end.Status != contracts.StatusSucceeded || end.Lines != n || last.Name != contracts.SSEComplete {
		t.Fatalf("ended %+v", end)
	}
	if s.LastEventID() != last.ID || last.ID == "" {
		t.Errorf("LastEventID %q, last event %q", s.LastEventID(), last.ID)
	}
	// A stream resumed after the complete event is over at once.
	again, err := c.Follow(ctx(t), client.StreamEventsURL(sub.StreamID), client.FollowOptions{LastEventID: last.ID})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := again.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("resumed after the end: %+v, %v; want io.EOF", ev, err)
	}
}

func TestBatch(t *testing.T) {
	t.Parallel()
	c := newClient(t, adminKey)
	project(t, c, "batch")
	items := []contracts.BatchItem{
		{Command: []string{"echo", "one"}},
		{Command: []string{"echo", "two"}, SubmitOptions: contracts.SubmitOptions{Priority: "urgent"}},
		{Command: []string{"echo", "three"}},
	}
	// Atomic: one bad item refuses them all.
	_, err := c.SubmitBatch(ctx(t), "batch", items, true)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "batch_refused" || len(ce.Items) != 3 || ce.Items[1].Error == nil || ce.Items[1].Error.Code != "invalid_priority" {
		t.Fatalf("atomic batch: %v (%+v)", err, ce)
	}
	b, err := c.SubmitBatch(ctx(t), "batch", items, false)
	if err != nil {
		t.Fatal(err)
	}
	if b.Accepted != 2 || b.Rejected != 1 || b.Items[1].Error == nil || b.Items[0].JobID == "" {
		t.Fatalf("batch reply %+v", b)
	}
	s, err := c.Follow(ctx(t), b.EventsURL, client.FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, last, _ := follow(t, s)
	done, err := last.BatchComplete()
	if err != nil || done.BatchID != b.BatchID || done.Jobs != 2 || done.Counts[contracts.StatusSucceeded] != 2 {
		t.Fatalf("batch complete %+v, %v", done, err)
	}
	st, err := c.Batch(ctx(t), b.BatchID, client.Page{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != b.BatchID || len(st.Jobs) != 1 || st.NextCursor == "" || st.Counts[contracts.StatusSucceeded] != 2 {
		t.Fatalf("batch status %+v", st)
	}
	if _, err := c.CancelBatch(ctx(t), b.BatchID); !client.IsCode(err, "batch_finished") {
		t.Fatalf("cancel of a finished batch: %v", err)
	}
}

func TestKeysAndProjects(t *testing.T) {
	t.Parallel()
	c := newClient(t, adminKey)
	project(t, c, "keys-projects")
	name := "renamed"
	p, err := c.UpdateProject(ctx(t), "keys-projects", contracts.ProjectPatch{Name: &name, RateLimit: &contracts.RateLimit{Requests: 100, WindowSeconds: 60}})
	if err != nil || p.Name != name || p.RateLimit == nil || p.RateLimit.Requests != 100 {
		t.Fatalf("update: %+v, %v", p, err)
	}
	k, err := c.CreateKey(ctx(t), contracts.KeyRequest{Name: "reader", Scopes: []string{"project:keys-projects:read"}})
	if err != nil || k.Key == "" || k.ID == "" {
		t.Fatalf("create key: %+v, %v", k, err)
	}
	reader := newClient(t, k.Key)
	ps, err := reader.Projects(ctx(t))
	if err != nil || len(ps) != 1 || ps[0].ID != "keys-projects" {
		t.Fatalf("the reader's projects: %+v, %v", ps, err)
	}
	if _, err := reader.SubmitCommand(ctx(t), "keys-projects", contracts.CommandRequest{Command: []string{"true"}}); !client.IsCode(err, "forbidden") {
		t.Fatalf("a reader's submit: %v, want forbidden", err)
	}
	ks, err := c.Keys(ctx(t))
	if err != nil || !slices.ContainsFunc(ks, func(x contracts.Key) bool { return x.ID == k.ID && x.Key == "" }) {
		t.Fatalf("keys: %v (the new key listed without its secret)", err)
	}
	if got, err := c.Key(ctx(t), k.ID); err != nil || got.Name != "reader" {
		t.Fatalf("key: %+v, %v", got, err)
	}
	if got, err := c.RevokeKey(ctx(t), k.ID); err != nil || got.RevokedAt == nil {
		t.Fatalf("revoke: %+v, %v", got, err)
	}
	if _, err := reader.Projects(ctx(t)); !client.IsCode(err, "revoked_api_key") {
		t.Fatalf("a revoked key: %v", err)
	}
	// The audit log tells; records are written in the background.
	await.Within(t, 10*time.Second, "a key_revoked audit record of "+k.ID, func() bool {
		page, err := c.Audit(ctx(t), client.AuditQuery{Kind: contracts.AuditKeyRevoked})
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(page.Records, func(r contracts.AuditRecord) bool { return r.Detail["key_id"] == k.ID })
	})
	// Secrets are write-only: listed by name, never by value.
	if created, err := c.PutSecret(ctx(t), "keys-projects", "token", "s3cret"); err != nil || !created {
		t.Fatalf("put secret: %v, created %v", err, created)
	}
	if created, err := c.PutSecret(ctx(t), "keys-projects", "token", "other"); err != nil || created {
		t.Fatalf("replace secret: %v, created %v", err, created)
	}
	if ss, err := c.Secrets(ctx(t), "keys-projects"); err != nil || len(ss) != 1 || ss[0].Name != "token" {
		t.Fatalf("secrets: %+v, %v", ss, err)
	}
	if err := c.DeleteSecret(ctx(t), "keys-projects", "token"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSecret(ctx(t), "keys-projects", "token"); !client.IsCode(err, "secret_not_found") {
		t.Fatalf("delete of a deleted secret: %v", err)
	}
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	c := newClient(t, adminKey)
	project(t, c, "dead")
	sub, err := c.SubmitCommand(ctx(t), "dead", contracts.CommandRequest{Command: []string{"sh", "-c", "exit 3"},
		SubmitOptions: contracts.SubmitOptions{MaxAttempts: 2, RetryOnExitCodes: []int{3}}}) // retries spent: a dead letter
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Follow(ctx(t), sub.EventsURL, client.FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, end := follow(t, s); end.Status != contracts.StatusFailed {
		t.Fatalf("job ended %s", end.Status)
	}
	if rerun, err := c.Retry(ctx(t), sub.JobID); err != nil || rerun.JobID == "" || rerun.JobID == sub.JobID {
		t.Fatalf("retry of the failed job: %+v, %v", rerun, err)
	}
	if _, err := c.Retry(ctx(t), "nope"); !client.IsCode(err, "job_not_found") {
		t.Fatalf("retry of an unknown job: %v, want job_not_found", err)
	}
	var dl contracts.DeadLetter
	await.Within(t, 10*time.Second, "a dead letter of job "+sub.JobID, func() bool {
		page, err := c.DeadLetters(ctx(t), "dead", client.Page{})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page.DeadLetters {
			if d.Job != nil && d.Job.ID == sub.JobID {
				dl = d
			}
		}
		return dl.ID != ""
	})
	again, err := c.RetryDeadLetter(ctx(t), dl.ID, false)
	if err != nil || again.JobID == "" || again.JobID == sub.JobID {
		t.Fatalf("retry: %+v, %v", again, err)
	}
	if _, err := c.RetryDeadLetter(ctx(t), dl.ID, false); !client.IsCode(err, "dead_letter_retried") {
		t.Fatalf("second retry: %v", err)
	}
	if err := c.DeleteDeadLetter(ctx(t), "no-such-letter"); !client.IsCode(err, "dead_letter_not_found") {
		t.Fatalf("delete of an unknown dead letter: %v", err)
	}
	purged, err := c.PurgeDeadLetters(ctx(t), "dead")
	if err != nil || purged.Project != "dead" || purged.Purged < 1 {
		t.Fatalf("purge: %+v, %v", purged, err)
	}
}

// Without reconnects a cut is the stream's error; Close from another
// goroutine ends a Next that waits.
func TestFollowWithoutReconnectsAndClose(t *testing.T) {
	t.Parallel()
	c := newClient(t, adminKey)
	project(t, c, "follow-close")
	sub, err := c.SubmitCommand(ctx(t), "follow-close", contracts.CommandRequest{Command: []string{"sleep", "60"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.Cancel(context.WithoutCancel(ctx(t)), sub.JobID) })
	cut := &cutTransport{n: 1}
	cut.cuts.Store(1)
	s, err := newClient(t, adminKey, client.WithHTTPClient(&http.Client{Transport: openapitest.Transport(t, cut)})).Follow(ctx(t), sub.EventsURL, client.FollowOptions{MaxReconnects: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); !errors.Is(err, errCut) {
		t.Fatalf("Next after a cut: %v, want the cut", err)
	}
	s, err = c.Follow(ctx(t), sub.EventsURL, client.FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for { // the job runs: its stream goes quiet after started
		ev, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if st, _ := ev.Status(); st.Type == contracts.EventStarted {
			break
		}
	}
	ended := make(chan error, 1)
	go func() {
		_, err := s.Next()
		ended <- err
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Next after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end Next")
	}
}

func TestBadBaseURLIsEveryCallsError(t *testing.T) {
	t.Parallel()
	c := client.New("127.0.0.1:8080") // no scheme
	if _, err := c.Job(ctx(t), "x"); err == nil || !strings.Contains(err.Error(), "base URL") {
		t.Fatalf("Job: %v, want the base URL's error", err)
	}
	if _, err := c.Follow(ctx(t), client.StreamEventsURL("s"), client.FollowOptions{}); err == nil || !strings.Contains(err.Error(), "base URL") {
		t.Fatalf("Follow: %v, want the base URL's error", err)
	}
}

// A client that submits and follows job after job submits on a warm
// connection: the streamer keeps a stream's connection and closes it at
// the stream's end, so a stream opened on the pooled connection would
// leave every next submit to dial (and, in production, handshake) again.
func TestSubmitsKeepTheirConnectionWhileStreamsComeAndGo(t *testing.T) {
	t.Parallel()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c := client.New(node, client.WithAPIKey(adminKey), client.WithHTTPClient(&http.Client{Transport: tr}))
	project(t, c, "keep-conn")
	for i := range 3 {
		var reused bool
		trace := httptrace.WithClientTrace(ctx(t), &httptrace.ClientTrace{GotConn: func(c httptrace.GotConnInfo) { reused = c.Reused }})
		sub, err := c.SubmitCommand(trace, "keep-conn", contracts.CommandRequest{Command: []string{"echo", "hi"}})
		if err != nil {
			t.Fatal(err)
		}
		if !reused {
			t.Fatalf("submit %d dialled a new connection; want the pooled one", i)
		}
		s, err := c.Follow(ctx(t), sub.EventsURL, client.FollowOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if lines, _, end := follow(t, s); end.Status != contracts.StatusSucceeded || len(lines) != 1 {
			t.Fatalf("job %d ended %s with %d lines", i, end.Status, len(lines))
		}
	}
}
