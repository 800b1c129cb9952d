package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
)

// list GETs a job listing and decodes it, failing the test on any status
// but 200.
func (b bundle) list(t *testing.T, path string, header ...string) contracts.JobList {
	t.Helper()
	resp, rb := b.get(t, path, header...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, rb)
	}
	var l contracts.JobList
	if err := json.Unmarshal(rb, &l); err != nil || l.Jobs == nil {
		t.Fatalf("GET %s: %s (%v)", path, rb, err)
	}
	return l
}

// submitN submits n jobs to project and returns their ids, oldest first.
func (b bundle) submitN(t *testing.T, project string, n int, body string) []string {
	t.Helper()
	var ids []string
	for range n {
		resp, r, rb := b.submit(t, "/v1/projects/"+project+"/commands", body)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit: %d %s", resp.StatusCode, rb)
		}
		ids = append(ids, r.JobID)
	}
	return ids
}

// waitListed polls path until it lists want jobs (the index reaches the
// API through a watch, within milliseconds of a write).
func (b bundle) waitListed(t *testing.T, path string, want int, header ...string) contracts.JobList {
	t.Helper()
	var l contracts.JobList
	await.Within(t, 5*time.Second, fmt.Sprintf("%d jobs in %s", want, path), func() bool {
		l = b.list(t, path, header...)
		return len(l.Jobs) == want
	})
	return l
}

func ids(l contracts.JobList) []string {
	var out []string
	for _, j := range l.Jobs {
		out = append(out, j.JobID)
	}
	return out
}

func newestFirst(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	slices.Reverse(s)
	return s
}

// Listings are newest first, filter on every field they offer, and a key
// never lists another project's jobs, by either route.
func TestListJobsFiltersAndScopes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	before := time.Now().UTC().Add(-time.Second)
	normal := b.submitN(t, "demo", 3, `{"command":["true"]}`)
	high := b.submitN(t, "demo", 2, `{"command":["true"],"priority":"high"}`)
	others := b.submitN(t, "other", 2, `{"command":["true"]}`)
	all := append(slices.Clone(normal), high...)

	// A worker ends one job.
	st := state.New(b.kv)
	if _, err := st.Jobs.Modify(ctx, normal[0], func(j *contracts.JobState) (bool, error) {
		j.Status, j.Attempt = contracts.StatusSucceeded, 1
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	await.Within(t, 5*time.Second, "the finished job listed as succeeded", func() bool {
		l := b.list(t, "/v1/projects/demo/jobs?status=succeeded")
		return len(l.Jobs) == 1 && l.Jobs[0].JobID == normal[0] && l.Jobs[0].Attempt == 1
	})
	l := b.waitListed(t, "/v1/projects/demo/jobs", len(all))
	if got := ids(l); !slices.Equal(got, newestFirst(all)) || l.NextCursor != "" {
		t.Fatalf("demo listing %v (next %q), want %v newest first", got, l.NextCursor, newestFirst(all))
	}
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"priority=high", high},
		{"priority=normal", normal},
		{"status=queued", append(slices.Clone(normal[1:]), high...)},
		{"kind=exec", all},
		{"kind=claude", nil},
		{"batch=nobatch", nil},
		{"since=" + url.QueryEscape(before.Format(time.RFC3339)), all},
		{"until=" + url.QueryEscape(before.Format(time.RFC3339)), nil},
		{"since=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)), nil},
	} {
		if got := ids(b.list(t, "/v1/projects/demo/jobs?"+c.query)); !slices.Equal(got, newestFirst(c.want)) {
			t.Errorf("?%s lists %v, want %v", c.query, got, newestFirst(c.want))
		}
	}

	// An admin lists every project's jobs, or one project's.
	everything := append(slices.Clone(all), others...)
	if got := ids(b.waitListed(t, "/v1/jobs", len(everything))); !slices.Equal(got, newestFirst(everything)) {
		t.Errorf("/v1/jobs lists %v, want %v", got, newestFirst(everything))
	}
	if got := ids(b.list(t, "/v1/jobs?project=other")); !slices.Equal(got, newestFirst(others)) {
		t.Errorf("/v1/jobs?project=other lists %v, want %v", got, newestFirst(others))
	}

	// A key of demo alone sees demo's jobs and nothing of other's.
	demoKey := bearer(b.newKey(t, `{"name":"demo reader","scopes":["project:demo:read"]}`).Key)
	if got := ids(b.list(t, "/v1/jobs", demoKey...)); !slices.Equal(got, newestFirst(all)) {
		t.Errorf("demo's key lists %v across projects, want demo's jobs %v", got, newestFirst(all))
	}
	for _, path := range []string{"/v1/projects/other/jobs", "/v1/jobs?project=other"} {
		resp, rb := b.get(t, path, demoKey...)
		if resp.StatusCode != http.StatusForbidden || strings.Contains(string(rb), others[0]) {
			t.Errorf("demo's key on %s: %d %s, want 403 and no job", path, resp.StatusCode, rb)
		}
	}
	submitOnly := bearer(b.newKey(t, `{"name":"submitter","scopes":["project:demo:submit"]}`).Key)
	if got := b.list(t, "/v1/jobs", submitOnly...); len(got.Jobs) != 0 {
		t.Errorf("a key that cannot read lists %v", ids(got))
	}
}

// Walking the pages of a listing while jobs keep arriving returns every
// job that was there when the walk began exactly once, in order.
func TestListJobsPagesWithoutDuplicatesOrGaps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := b.submitN(t, "demo", 25, `{"command":["true"]}`)
	b.waitListed(t, "/v1/projects/demo/jobs?limit=1000", len(first))

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.submitN(t, "demo", 15, `{"command":["true"]}`)
	}()
	var walked []string
	cursor := ""
	for {
		l := b.list(t, "/v1/projects/demo/jobs?limit=4&cursor="+cursor)
		if len(l.Jobs) > 4 {
			t.Fatalf("page of %d jobs, limit 4", len(l.Jobs))
		}
		walked = append(walked, ids(l)...)
		if l.NextCursor == "" {
			break
		}
		cursor = l.NextCursor
	}
	wg.Wait()
	seen := map[string]int{}
	for i, id := range walked {
		seen[id]++
		if i > 0 && walked[i-1] <= id {
			t.Fatalf("walk not newest first at %d: %v", i, walked)
		}
	}
	for _, id := range first {
		if seen[id] != 1 {
			t.Errorf("job %s listed %d times over the walk", id, seen[id])
		}
	}
}

// Concurrent workers moving jobs through their states leave the listing
// with each job's final status.
func TestListJobsFollowsConcurrentStateChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	jobIDs := b.submitN(t, "demo", 10, `{"command":["true"]}`)
	st := state.New(b.kv)
	var wg sync.WaitGroup
	for _, id := range jobIDs {
		for _, s := range []contracts.Status{contracts.StatusRunning, contracts.StatusSucceeded} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Racing writers; a final status is never left for another.
				_, err := st.Jobs.Modify(ctx, id, func(j *contracts.JobState) (bool, error) {
					if j.Status.Final() {
						return false, nil
					}
					j.Status = s
					return true, nil
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	want := map[string]contracts.Status{}
	for _, id := range jobIDs {
		j, _, err := st.Jobs.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = j.Status
	}
	await.Within(t, 5*time.Second, "the listing to show every job's state", func() bool {
		l := b.list(t, "/v1/projects/demo/jobs")
		ok := len(l.Jobs) == len(jobIDs)
		for _, j := range l.Jobs {
			ok = ok && j.Status == want[j.JobID]
		}
		return ok
	})
}

// Bad query values are refused with 400 and a code saying which.
func TestListJobsRefusesBadQueries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for query, code := range map[string]string{
		"status=done":       "invalid_status",
		"priority=urgent":   "invalid_priority",
		"kind=shell":        "invalid_kind",
		"batch=a.b":         "invalid_batch",
		"since=yesterday":   "invalid_since",
		"until=2026-13-01":  "invalid_until",
		"cursor=" + "x%2Ey": "invalid_cursor",
		"limit=0":           "invalid_limit",
		"limit=1001":        "invalid_limit",
		"limit=ten":         "invalid_limit",
	} {
		for _, path := range []string{"/v1/projects/demo/jobs?", "/v1/jobs?"} {
			resp, rb := b.get(t, path+query)
			if resp.StatusCode != http.StatusBadRequest || errCode(t, rb) != code {
				t.Errorf("%s%s: %d %s, want 400 %s", path, query, resp.StatusCode, rb, code)
			}
		}
	}
	if resp, rb := b.get(t, "/v1/jobs?project=Not_A_Project"); resp.StatusCode != http.StatusBadRequest || errCode(t, rb) != "invalid_project" {
		t.Errorf("bad project: %d %s", resp.StatusCode, rb)
	}
}
