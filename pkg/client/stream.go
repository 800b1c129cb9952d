package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Event is one Server-Sent Event of a job's or a batch's stream. Its
// accessors decode the data as the contracts type its name announces.
type Event struct {
	// ID is the event's id, the Last-Event-ID a reconnect resumes after;
	// "" when the event has none.
	ID string
	// Name is contracts.SSEConnected, SSEOutput, SSEStatus, SSEGap,
	// SSEError or SSEComplete (a ?format=claude stream has its own).
	Name string
	// Data is the event's data; valid only until the next call to Next.
	Data []byte
}

// Line decodes an output event.
func (e Event) Line() (contracts.OutputLine, error) { return decode[contracts.OutputLine](e) }

// Status decodes a job stream's status or complete event.
func (e Event) Status() (contracts.Event, error) { return decode[contracts.Event](e) }

// Gap decodes a gap event: lines the stream lost.
func (e Event) Gap() (contracts.SSEGapData, error) { return decode[contracts.SSEGapData](e) }

// Connected decodes the connected event that opens every connection.
func (e Event) Connected() (contracts.SSEConnectedData, error) {
	return decode[contracts.SSEConnectedData](e)
}

// Problem decodes an error event; the server then ends the connection,
// and Next reconnects unless the reconnect is refused.
func (e Event) Problem() (contracts.ErrorDetail, error) { return decode[contracts.ErrorDetail](e) }

// BatchComplete decodes the complete event of a batch's stream.
func (e Event) BatchComplete() (contracts.BatchComplete, error) {
	return decode[contracts.BatchComplete](e)
}

func decode[T any](e Event) (T, error) {
	var v T
	if err := json.Unmarshal(e.Data, &v); err != nil {
		return v, fmt.Errorf("decode %s event %s: %w", e.Name, e.ID, err)
	}
	return v, nil
}

// FollowOptions tune Follow.
type FollowOptions struct {
	// LastEventID resumes after this event id; "" reads from the start.
	LastEventID string
	// MaxReconnects bounds the reconnects in a row that deliver no event
	// before Next gives up; 0 means 10, and a negative number none: the
	// first disconnect ends the stream with an error.
	MaxReconnects int
}

// Follow opens an event stream: eventsURL is an events_url of a reply
// (relative to the base URL, or absolute), or StreamEventsURL of a stream.
// The first connection is made before Follow returns, so a refused
// stream (unknown, forbidden) is an *Error here. Close the stream when
// done with it.
func (c *Client) Follow(ctx context.Context, eventsURL string, o FollowOptions) (*Stream, error) {
	if !strings.Contains(eventsURL, "://") {
		eventsURL = c.base + eventsURL
	}
	if o.MaxReconnects == 0 {
		o.MaxReconnects = 10
	}
	s := &Stream{c: c, url: eventsURL, max: max(o.MaxReconnects, 0), lastID: o.LastEventID}
	s.ctx, s.cancel = context.WithCancel(ctx)
	if err := s.connect(); err != nil {
		s.cancel()
		return nil, err
	}
	return s, nil
}

// StreamEventsURL is the events URL of stream id, for a client that
// authenticates with its API key rather than a token.
func StreamEventsURL(id string) string { return "/v1/streams/" + esc(id) + "/events" }

// BatchEventsURL is the events URL of batch id, for a client that
// authenticates with its API key.
func BatchEventsURL(id string) string { return "/v1/batches/" + esc(id) + "/events" }

// Stream reads one event stream, reconnecting with Last-Event-ID when the
// connection ends before the complete event, so no event is lost or
// repeated across disconnects. Only Close may be called concurrently
// with Next; the stream starts no goroutine.
type Stream struct {
	c      *Client
	ctx    context.Context
	cancel context.CancelFunc
	url    string
	max    int
	lastID string
	retry  time.Duration // the server's retry: field, the first reconnect's wait

	resp *http.Response
	r    *bufio.Reader
	line []byte // a line longer than the reader's buffer is gathered here
	data []byte
	done bool

	reconnects int
}

// Reconnects is how many times the stream connected again.
func (s *Stream) Reconnects() int { return s.reconnects }

// Next returns the next event. After the complete event it returns
// io.EOF. A refused reconnect is an *Error; the stream's context ending
// is its error.
func (s *Stream) Next() (Event, error) {
	failures := 0
	for {
		if s.done {
			return Event{}, io.EOF
		}
		if s.resp == nil {
			if err := s.reconnect(&failures); err != nil {
				return Event{}, err
			}
			continue
		}
		ev, err := s.read()
		if err == nil {
			if ev.ID != "" {
				s.lastID = ev.ID
			}
			if ev.Name == contracts.SSEComplete {
				s.done = true
				s.closeBody()
				s.cancel()
			}
			return ev, nil
		}
		s.closeBody()
		if s.ctx.Err() != nil {
			return Event{}, s.ctx.Err()
		}
		if s.max == 0 {
			return Event{}, fmt.Errorf("stream %s ended before its complete event: %w", s.url, err)
		}
	}
}

// LastEventID is the id of the last event read: where a new Follow would
// resume.
func (s *Stream) LastEventID() string { return s.lastID }

// Close ends the stream; a Next in progress returns context.Canceled.
func (s *Stream) Close() error {
	s.cancel()
	return nil
}

func (s *Stream) closeBody() {
	if s.resp != nil {
		_ = s.resp.Body.Close()
		s.resp, s.r = nil, nil
	}
}

// reconnect waits and connects again; a refusal that retrying cannot
// change, or too many failures in a row, is returned.
func (s *Stream) reconnect(failures *int) error {
	for {
		*failures++
		if *failures > s.max {
			return fmt.Errorf("stream %s: gave up after %d reconnects", s.url, s.max)
		}
		wait := s.retry << (*failures - 1)
		var ae *Error
		t := time.NewTimer(min(wait, 10*time.Second))
		select {
		case <-s.ctx.Done():
			t.Stop()
			return s.ctx.Err()
		case <-t.C:
		}
		s.reconnects++
		err := s.connect()
		switch {
		case err == nil:
			return nil
		case s.ctx.Err() != nil:
			return s.ctx.Err()
		case errors.As(err, &ae) && ae.Status != http.StatusServiceUnavailable:
			return err
		case errors.As(err, &ae) && ae.RetryAfter > s.retry:
			s.retry = ae.RetryAfter
		}
	}
}

func (s *Stream) connect() error {
	if s.retry == 0 {
		s.retry = 100 * time.Millisecond
	}
	req, err := s.c.newRequest(s.ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if s.lastID != "" {
		req.Header.Set("Last-Event-ID", s.lastID)
	}
	resp, err := s.c.streams.Do(req)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	if resp.StatusCode == http.StatusNoContent { // resumed after the complete event: nothing follows
		_ = resp.Body.Close()
		s.done = true
		s.cancel()
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return readError(resp)
	}
	s.resp, s.r = resp, bufio.NewReaderSize(resp.Body, 64<<10)
	return nil
}

// read reads the next event of the open connection. Comments are
// skipped, the retry field kept, multi-line data joined with "\n".
func (s *Stream) read() (Event, error) {
	var ev Event
	s.data = s.data[:0]
	data := false
	for {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the stream ends with complete, never by itself
			}
			return Event{}, err
		}
		switch {
		case len(line) == 0:
			if ev.Name != "" || data {
				if ev.Name == "" {
					ev.Name = "message"
				}
				ev.Data = s.data
				return ev, nil
			}
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("event:")):
			ev.Name = name(bytes.TrimSpace(line[len("event:"):]))
		case bytes.HasPrefix(line, []byte("id:")):
			ev.ID = string(bytes.TrimSpace(line[len("id:"):]))
		case bytes.HasPrefix(line, []byte("data:")):
			v := bytes.TrimPrefix(line[len("data:"):], []byte(" "))
			if data {
				s.data = append(s.data, '\n')
			}
			s.data, data = append(s.data, v...), true
		case bytes.HasPrefix(line, []byte("retry:")):
			if ms, err := strconv.Atoi(string(bytes.TrimSpace(line[len("retry:"):]))); err == nil && ms > 0 {
				s.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// readLine returns the next line without its line ending.
func (s *Stream) readLine() ([]byte, error) {
	line, err := s.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		s.line = append(s.line[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = s.r.ReadSlice('\n')
			s.line = append(s.line, line...)
		}
		line = s.line
	}
	if err != nil {
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), nil
}

var names = []string{contracts.SSEOutput, contracts.SSEStatus, contracts.SSEComplete, contracts.SSEConnected,
	contracts.SSEGap, contracts.SSEError}

// name returns the event name as a string without allocating for the
// names rdev sends: a stream may carry millions of events.
func name(b []byte) string {
	for _, n := range names {
		if string(b) == n {
			return n
		}
	}
	return string(b)
}
