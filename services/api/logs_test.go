package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
)

// printed stores output lines of job r as its worker would, numbering them
// from seq.
func (b bundle) printed(t *testing.T, r contracts.SubmitResponse, seq uint64, attempt int, lines ...string) uint64 {
	t.Helper()
	return b.store(t, contracts.SubjectOutput("demo", r.StreamID), contracts.OutputLineVersion, r, seq, attempt, lines...)
}

// printedLegacy stores lines as a worker before OutputLineVersion 2 did:
// on the subject without the project.
func (b bundle) printedLegacy(t *testing.T, r contracts.SubmitResponse, seq uint64, attempt int, lines ...string) uint64 {
	t.Helper()
	return b.store(t, contracts.SubjectOutputLegacy(r.StreamID), 1, r, seq, attempt, lines...)
}

func (b bundle) store(t *testing.T, subject string, v int, r contracts.SubmitResponse, seq uint64, attempt int, lines ...string) uint64 {
	t.Helper()
	for _, l := range lines {
		fd, text, _ := strings.Cut(l, ":")
		body, err := json.Marshal(contracts.OutputLine{V: v, StreamID: r.StreamID, JobID: r.JobID,
			Attempt: attempt, Seq: seq, FD: contracts.FD(fd), Text: text, Time: time.Date(2026, 12, 5, 1, 0, 0, int(seq), time.UTC)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.js.Publish(t.Context(), subject, body); err != nil {
			t.Fatal(err)
		}
		seq++
	}
	return seq
}

// ended stores job r's terminal event and final state, as its worker would.
func (b bundle) ended(t *testing.T, r contracts.SubmitResponse) {
	t.Helper()
	if _, err := state.New(b.kv).Jobs.Modify(t.Context(), r.JobID, func(j *contracts.JobState) (bool, error) {
		j.Status = contracts.StatusSucceeded
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(contracts.Event{V: contracts.Version, Type: contracts.EventSucceeded, Status: contracts.StatusSucceeded,
		JobID: r.JobID, StreamID: r.StreamID, Project: "demo", Time: time.Now()})
	msg := nats.NewMsg(contracts.SubjectEvent("demo", r.StreamID, contracts.EventSucceeded))
	msg.Data = body
	if _, err := b.js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
}

func (b bundle) logs(t *testing.T, jobID, query string, header ...string) (int, string, string) {
	t.Helper()
	resp, rb := b.get(t, "/v1/jobs/"+jobID+"/logs"+query, header...)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(rb)
}

// A job whose first attempt printed before lines carried the project
// (OutputLineVersion 1, still in RDEV_OUTPUT after an upgrade) has all its
// lines in its logs, in stored order.
func TestLogsReadLinesStoredBeforeProjectSubjects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, r, _ := b.submit(t, "/v1/projects/demo/commands", `{"command":["true"]}`)
	seq := b.printedLegacy(t, r, 1, 1, "stdout:old one", "stdout:old two")
	b.printed(t, r, seq, 2, "stdout:new three")
	b.ended(t, r)
	if code, _, body := b.logs(t, r.JobID, ""); code != http.StatusOK || body != "old one\nold two\nnew three\n" {
		t.Fatalf("logs: %d %q", code, body)
	}
}

// The logs of a job are its lines as plain text, in stored order, with
// the filters and switches GET /v1/jobs/{id}/logs offers.
func TestLogsArePlainTextInStoredOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, r, _ := b.submit(t, "/v1/projects/demo/commands", `{"command":["true"]}`)
	if code, _, body := b.logs(t, r.JobID, ""); code != http.StatusOK || body != "" {
		t.Fatalf("logs of a job that printed nothing: %d %q", code, body)
	}
	seq := b.printed(t, r, 1, 1, "stdout:first try", "stderr:\x1b[31mfailed\x1b[0m")
	b.printed(t, r, seq, 2, "stdout:one", "stderr:two", "stdout:\x1b[1mthree\x1b[0m")
	b.ended(t, r)
	for _, c := range []struct{ query, want string }{
		{"", "first try\n\x1b[31mfailed\x1b[0m\none\ntwo\n\x1b[1mthree\x1b[0m\n"},
		{"?strip_ansi=true", "first try\nfailed\none\ntwo\nthree\n"},
		{"?fd=stdout", "first try\none\n\x1b[1mthree\x1b[0m\n"},
		{"?fd=stderr&strip_ansi=1", "failed\ntwo\n"},
		{"?attempt=2&strip_ansi=true", "one\ntwo\nthree\n"},
		{"?attempt=3", ""},
		{"?attempt=1&fd=stdout&timestamps=true", "2026-12-05T01:00:00.000000001Z first try\n"},
		{"?follow=true&attempt=2&fd=stderr", "two\n"}, // ended: follow returns at once
		{"?since=2026-12-05T01:00:00.000000004Z&strip_ansi=true", "two\nthree\n"},
		{"?since=2026-12-05T02:00:00%2B01:00&fd=stdout", "first try\none\n\x1b[1mthree\x1b[0m\n"}, // 01:00Z: every line
		{"?since=2026-12-05T01:00:01Z", ""},
	} {
		code, ct, body := b.logs(t, r.JobID, c.query)
		if code != http.StatusOK || !strings.HasPrefix(ct, "text/plain") || body != c.want {
			t.Errorf("logs%s: %d %s %q, want %q", c.query, code, ct, body, c.want)
		}
	}
}

// With ?follow=true the response stays open and carries each line as it
// is stored, until the job ends.
func TestLogsFollowUntilTheJobEnds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, r, _ := b.submit(t, "/v1/projects/demo/commands", `{"command":["true"]}`)
	seq := b.printed(t, r, 1, 1, "stdout:before")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/v1/jobs/"+r.JobID+"/logs?follow=true", nil)
	req.Header.Set("Authorization", "Bearer "+b.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	expect := func(want string) {
		t.Helper()
		got, err := lines.ReadString('\n')
		if err != nil || got != want {
			t.Fatalf("followed line %q (%v), want %q", got, err, want)
		}
	}
	expect("before\n")
	seq = b.printed(t, r, seq, 1, "stdout:live")
	expect("live\n")
	b.printed(t, r, seq, 1, "stderr:last")
	b.ended(t, r)
	expect("last\n")
	if rest, err := io.ReadAll(lines); err != nil || len(rest) != 0 {
		t.Fatalf("after the end: %q, %v; want the response closed", rest, err)
	}
}

// Logs are authorized like the job: another project's key finds no job,
// and bad query values are refused with a code.
func TestLogsRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, r, _ := b.submit(t, "/v1/projects/demo/commands", `{"command":["true"]}`)
	b.printed(t, r, 1, 1, "stdout:secret output")
	otherKey := bearer(b.newKey(t, `{"name":"other reader","scopes":["project:other:read"]}`).Key)
	if code, _, body := b.logs(t, r.JobID, "", otherKey...); code != http.StatusNotFound || strings.Contains(body, "secret") || errCode(t, []byte(body)) != "job_not_found" {
		t.Errorf("another project's key: %d %s, want 404 job_not_found", code, body)
	}
	for query, code := range map[string]string{
		"?fd=stdin":        "invalid_fd",
		"?attempt=0":       "invalid_attempt",
		"?attempt=x":       "invalid_attempt",
		"?since=10m":       "invalid_since",
		"?timestamps=yes":  "invalid_timestamps",
		"?follow=maybe":    "invalid_follow",
		"?strip_ansi=nope": "invalid_strip_ansi",
	} {
		if got, _, body := b.logs(t, r.JobID, query); got != http.StatusBadRequest || errCode(t, []byte(body)) != code {
			t.Errorf("logs%s: %d %s, want 400 %s", query, got, body, code)
		}
	}
	if code, _, body := b.logs(t, "nope", ""); code != http.StatusNotFound {
		t.Errorf("logs of an unknown job: %d %s", code, body)
	}
}
