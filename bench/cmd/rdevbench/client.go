package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/rdev-dev/rdev/bench/internal/sse"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// client talks to rdev's HTTP API and streamer, keeping connections alive
// between requests as a browser would.
var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}

// accepted is the API's reply to a submitted command.
type accepted struct {
	JobID     string `json:"job_id"`
	StreamID  string `json:"stream_id"`
	EventsURL string `json:"events_url"`
}

// adminKey is the bootstrap admin key the benchmark's rdev processes get
// (through RDEV_BOOTSTRAP_API_KEY) and its requests send.
const adminKey = "rdev-bench-admin-key-0123456789abcdef"

// post sends body as JSON with the admin key and returns status and body.
func post(ctx context.Context, url string, body any) (int, []byte, error) {
	b, _ := json.Marshal(body)
	return postAs(ctx, url, adminKey, b)
}

// postAs sends a JSON body with key and returns status and body.
func postAs(ctx context.Context, url, key string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	return resp.StatusCode, rb, err
}

// submit posts a command to project, creating the project on first use,
// and returns the 202 reply.
func submit(ctx context.Context, base, project string, command []string, timeout time.Duration) (accepted, error) {
	body := map[string]any{"command": command, "timeout_seconds": int(timeout.Seconds())}
	status, b, err := post(ctx, base+"/v1/projects/"+project+"/commands", body)
	if err == nil && status == http.StatusNotFound && bytes.Contains(b, []byte("project_not_found")) {
		if _, _, err = post(ctx, base+"/v1/projects", map[string]string{"id": project}); err == nil {
			status, b, err = post(ctx, base+"/v1/projects/"+project+"/commands", body)
		}
	}
	if err != nil {
		return accepted{}, err
	}
	if status != http.StatusAccepted {
		return accepted{}, fmt.Errorf("submit: %d: %s", status, b)
	}
	var a accepted
	if err := json.Unmarshal(b, &a); err != nil {
		return accepted{}, fmt.Errorf("submit reply %q: %w", b, err)
	}
	return a, nil
}

// finish reads s to its complete event and the end of the response, and
// checks that the job succeeded with lines output lines.
func finish(s *sse.Stream, lines uint64) error {
	for {
		if err := s.Next(); err != nil {
			return fmt.Errorf("stream ended before complete: %w", err)
		}
		if s.Name == contracts.SSEComplete {
			break
		}
	}
	if _, err := checkComplete(s.Data, lines); err != nil {
		return err
	}
	for s.Next() == nil {
	}
	return nil
}

// checkComplete checks a complete event's data (succeeded, with lines
// lines) and returns the event.
func checkComplete(data []byte, lines uint64) (contracts.Event, error) {
	var ev contracts.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("complete event %q: %w", data, err)
	}
	if ev.Status != contracts.StatusSucceeded || ev.Lines != lines {
		return ev, fmt.Errorf("job ended %s (%s %s) with %d lines, want succeeded with %d", ev.Status, ev.Reason, ev.Message, ev.Lines, lines)
	}
	return ev, nil
}
