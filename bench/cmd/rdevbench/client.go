package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// httpClient carries every request to rdev, keeping connections alive
// between requests as a browser would.
var httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}

// adminKey is the bootstrap admin key the benchmark's rdev processes get
// (through RDEV_BOOTSTRAP_API_KEY) and its requests send.
const adminKey = "rdev-bench-admin-key-0123456789abcdef"

// api is a client of the rdev process at base, sending key.
func api(base, key string) *client.Client {
	return client.New(base, client.WithAPIKey(key), client.WithHTTPClient(httpClient), client.WithUserAgent("rdevbench"))
}

// createProject creates project as admin; one that exists already is
// fine.
func createProject(ctx context.Context, base string, req contracts.ProjectRequest) error {
	if _, err := api(base, adminKey).CreateProject(ctx, req); err != nil && !client.IsCode(err, "project_exists") {
		return fmt.Errorf("create project %s: %w", req.ID, err)
	}
	return nil
}

// submitAs submits req to project with key, creating the project on
// first use.
func submitAs(ctx context.Context, base, key, project string, req contracts.CommandRequest) (contracts.SubmitResponse, error) {
	a, err := api(base, key).SubmitCommand(ctx, project, req)
	if client.IsCode(err, "project_not_found") {
		if err = createProject(ctx, base, contracts.ProjectRequest{ID: project}); err == nil {
			a, err = api(base, key).SubmitCommand(ctx, project, req)
		}
	}
	if err != nil {
		return a, fmt.Errorf("submit: %w", err)
	}
	return a, nil
}

// submit submits a command to project as admin and returns the 202 reply.
func submit(ctx context.Context, base, project string, command []string, timeout time.Duration) (contracts.SubmitResponse, error) {
	return submitAs(ctx, base, adminKey, project, contracts.CommandRequest{Command: command,
		SubmitOptions: contracts.SubmitOptions{TimeoutSeconds: int(timeout.Seconds())}})
}

// follow opens the event stream eventsURL of the process at base (the
// benchmark may split the API and the streamer over processes). A dropped
// connection is an error, not a silent resume: the measurement must see
// it.
func follow(ctx context.Context, base, eventsURL string) (*client.Stream, error) {
	return api(base, adminKey).Follow(ctx, eventsURL, client.FollowOptions{MaxReconnects: -1})
}

// finish reads s to its complete event and checks that the job succeeded
// with lines output lines.
func finish(s *client.Stream, lines uint64) error {
	for {
		ev, err := s.Next()
		if err != nil {
			return fmt.Errorf("stream ended before complete: %w", err)
		}
		if ev.Name == contracts.SSEComplete {
			_, err := checkComplete(ev, lines)
			return err
		}
	}
}

// checkComplete checks a complete event (succeeded, with lines lines) and
// returns its data.
func checkComplete(complete client.Event, lines uint64) (contracts.Event, error) {
	ev, err := complete.Status()
	if err != nil {
		return ev, err
	}
	if ev.Status != contracts.StatusSucceeded || ev.Lines != lines {
		return ev, fmt.Errorf("job ended %s (%s %s) with %d lines, want succeeded with %d", ev.Status, ev.Reason, ev.Message, ev.Lines, lines)
	}
	return ev, nil
}
