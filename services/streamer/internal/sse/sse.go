// Package sse writes Server-Sent Events to an HTTP response, bounding how
// long any one write may block so a stalled client cannot hold a goroutine.
package sse

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Writer writes one event stream. It is not safe for concurrent use.
type Writer struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte
}

// NewWriter returns a writer on w whose every write and flush must finish
// within timeout.
func NewWriter(w http.ResponseWriter, timeout time.Duration) *Writer {
	// Deadlines and flushes go to the innermost writer: wrappers such as
	// echo.Response drop flush errors, which would hide a stalled client
	// until the next write.
	return &Writer{w: w, rc: http.NewResponseController(innermost(w)), timeout: timeout}
}

func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// Open sends the event-stream headers and the client's reconnection delay,
// and flushes them.
func (w *Writer) Open(retry time.Duration) error {
	h := w.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no") // keeps nginx from buffering the stream
	w.w.WriteHeader(http.StatusOK)
	w.buf = append(w.buf[:0], "retry: "...)
	w.buf = strconv.AppendInt(w.buf, retry.Milliseconds(), 10)
	w.buf = append(w.buf, "\n\n"...)
	if err := w.write(); err != nil {
		return err
	}
	return w.Flush()
}

// Event writes one event. It may stay buffered until Flush.
func (w *Writer) Event(id, name string, data []byte) error {
	b := append(w.buf[:0], "id: "...)
	b = append(b, id...)
	b = append(b, "\nevent: "...)
	b = append(b, name...)
	b = append(b, '\n')
	// Each line of data is its own data field; the client joins them with
	// "\n" again.
	for {
		line, rest, more := cutLine(data)
		b = append(b, "data: "...)
		b = append(b, line...)
		b = append(b, '\n')
		if !more {
			break
		}
		data = rest
	}
	w.buf = append(b, '\n')
	return w.write()
}

// cutLine splits data at the first CR, LF or CRLF.
func cutLine(data []byte) (line, rest []byte, found bool) {
	i := bytes.IndexAny(data, "\r\n")
	if i < 0 {
		return data, nil, false
	}
	if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
		return data[:i], data[i+2:], true
	}
	return data[:i], data[i+1:], true
}

// Comment writes a comment line, which clients ignore, and flushes it.
func (w *Writer) Comment(text string) error {
	w.buf = append(append(append(w.buf[:0], ": "...), text...), "\n\n"...)
	if err := w.write(); err != nil {
		return err
	}
	return w.Flush()
}

// Flush sends everything written so far.
func (w *Writer) Flush() error {
	if err := w.deadline(); err != nil {
		return err
	}
	return w.rc.Flush()
}

func (w *Writer) write() error {
	if err := w.deadline(); err != nil {
		return err
	}
	_, err := w.w.Write(w.buf)
	return err
}

// deadline replaces the server's write deadline, which covers the whole
// response, with one for the next write only.
func (w *Writer) deadline() error {
	err := w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	if errors.Is(err, http.ErrNotSupported) {
		return nil // e.g. httptest.ResponseRecorder: nothing to bound
	}
	return err
}
