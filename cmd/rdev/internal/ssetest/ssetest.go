// Package ssetest is a Server-Sent Events client for tests: it reads a
// stream event by event, as a browser EventSource would, and reconnects
// with Last-Event-ID.
package ssetest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Event is one SSE event.
type Event struct {
	ID, Name, Data string
}

// Stream is an open SSE response.
type Stream struct {
	Status int
	resp   *http.Response
	events chan Event
	cancel context.CancelFunc
	// LastID is the id of the last event read.
	LastID string
}

// Open connects to url, resuming after lastID when it is not empty.
func Open(t testing.TB, url, lastID string) *Stream {
	t.Helper()
	s, err := Dial(url, lastID)
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(s.Close)
	return s
}

// Dial is Open for callers that handle the error themselves (clients that
// reconnect from their own goroutines); the caller closes the stream.
func Dial(url, lastID string) (*Stream, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed by Stream.Close
	if err != nil {
		cancel()
		return nil, err
	}
	s := &Stream{Status: resp.StatusCode, resp: resp, events: make(chan Event, 1024), cancel: cancel}
	go s.read()
	return s, nil
}

func (s *Stream) read() {
	defer close(s.events)
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var ev Event
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Name != "" || len(data) > 0 {
				ev.Data = strings.Join(data, "\n")
				s.events <- ev
			}
			ev, data = Event{}, nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id:"):
			ev.ID = strings.TrimSpace(strings.TrimPrefix(line, "id:"))
		case strings.HasPrefix(line, "event:"):
			ev.Name = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
}

// Next returns the next event, or an error if the stream ends or none
// arrives within wait.
func (s *Stream) Next(wait time.Duration) (Event, error) {
	select {
	case ev, ok := <-s.events:
		if !ok {
			return Event{}, fmt.Errorf("stream ended")
		}
		if ev.ID != "" {
			s.LastID = ev.ID
		}
		return ev, nil
	case <-time.After(wait):
		return Event{}, fmt.Errorf("no event within %s", wait)
	}
}

// Ended reports whether the server closed the stream within wait.
func (s *Stream) Ended(wait time.Duration) bool {
	select {
	case _, ok := <-s.events:
		return !ok
	case <-time.After(wait):
		return false
	}
}

// Close disconnects.
func (s *Stream) Close() {
	s.cancel()
	_ = s.resp.Body.Close()
}
