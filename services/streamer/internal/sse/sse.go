// Package sse writes Server-Sent Events to an HTTP response, bounding how
// long any one write may block so a stalled client cannot hold a goroutine.
//
// A stream that lasts hours should not keep what net/http holds for every
// connection it serves: two 4 KiB buffers, the request, a goroutine
// reading in the background and the handler's. Take therefore takes the
// connection over once the headers are decided and writes the stream on
// it as HTTP/1.1 chunks; the handler can then return and net/http
// forgets the connection. Hangups tells when the peer of such a
// connection hangs up, for all of them at once.
//
// Events are gathered in a buffer and reach the connection in one write
// per Flush (or per writeChunk bytes, whichever comes first), so a burst
// of events costs one system call rather than one per event. The buffer is
// borrowed from a pool while events wait in it and returned by Flush, so an
// idle stream holds none.
package sse

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// writeChunk is how many buffered bytes make Event write them out without
// waiting for Flush: it bounds both the buffer and the bytes a single
// deadline covers.
const writeChunk = 32 << 10

// maxPooled is the largest buffer returned to the pool; one grown by a huge
// event is left to the garbage collector.
const maxPooled = 2 * writeChunk

var buffers = sync.Pool{New: func() any { b := make([]byte, 0, writeChunk+4<<10); return &b }}

// errBroken fails writes to a taken-over connection after one failed.
var errBroken = errors.New("sse: an earlier write to the connection failed")

// chunkHead is the room kept at the start of a taken-over connection's
// buffer for the chunk's size line: up to 16 hex digits and CRLF.
const chunkHead = 18

// Writer writes one event stream. It is not safe for concurrent use.
type Writer struct {
	w       http.ResponseWriter // nil once the connection was taken over
	rc      *http.ResponseController
	conn    net.Conn // the connection taken over by Take, written in chunks
	broken  bool     // a write to conn failed: nothing more is written
	timeout time.Duration
	buf     *[]byte // events not yet written; nil when there are none
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
	b := w.buffer()
	*b = append(*b, "retry: "...)
	*b = strconv.AppendInt(*b, retry.Milliseconds(), 10)
	*b = append(*b, "\n\n"...)
	return w.Flush()
}

// Take sends the event-stream headers and the client's reconnection delay
// like Open, but on the connection taken over from net/http: the stream is
// written on it as HTTP/1.1 chunks from then on, and the handler may return
// while the stream goes on (call Close when it ends). Where the connection
// cannot be taken over (HTTP/2, HTTP/1.0, a test recorder) Take calls Open
// and the stream stays the handler's: Conn then returns nil.
func (w *Writer) Take(r *http.Request, retry time.Duration) error {
	if !r.ProtoAtLeast(1, 1) || r.ProtoMajor != 1 {
		return w.Open(retry)
	}
	conn, brw, err := w.rc.Hijack()
	if err != nil {
		return w.Open(retry)
	}
	h := w.w.Header()
	w.w, w.rc, w.conn = nil, nil, conn
	// What the client may have sent after the request (it should send
	// nothing) stays unread: the stream only writes.
	_ = brw
	b := make([]byte, 0, 512)
	b = append(b, "HTTP/1.1 200 OK\r\n"...)
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Transfer-Encoding", "chunked")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	h.Del("Content-Length")
	// The stream's end closes the connection: a client told keep-alive
	// would pool it and send its next request into the close.
	h.Set("Connection", "close")
	buf := bytes.NewBuffer(b)
	if err := h.Write(buf); err != nil {
		_ = conn.Close()
		return err
	}
	buf.WriteString("\r\n")
	if err := w.deadline(); err != nil {
		_ = conn.Close()
		return err
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		_ = conn.Close()
		return err
	}
	p := w.buffer()
	*p = append(*p, "retry: "...)
	*p = strconv.AppendInt(*p, retry.Milliseconds(), 10)
	*p = append(*p, "\n\n"...)
	return w.Flush()
}

// Conn returns the connection Take took over, or nil.
func (w *Writer) Conn() net.Conn { return w.conn }

// Close ends a stream on a taken-over connection with the last chunk and
// closes the connection. It does nothing for a stream net/http still
// serves: returning from the handler ends that.
func (w *Writer) Close() error {
	if w.conn == nil {
		return nil
	}
	if w.broken { // a stalled client is not waited for twice
		w.discard()
		return w.conn.Close()
	}
	err := w.deadline()
	if err == nil {
		err = w.writeBuffer()
	}
	if err == nil {
		_, err = w.conn.Write([]byte("0\r\n\r\n"))
	}
	if cerr := w.conn.Close(); err == nil {
		err = cerr
	}
	return err
}

// Event buffers one event with id as its id; it reaches the client at the
// next Flush at the latest.
func (w *Writer) Event(id uint64, name string, data []byte) error {
	p := w.buffer()
	*p = AppendEvent(*p, id, name, data)
	return w.buffered()
}

// Frame buffers events already encoded by AppendEvent, as Event would have
// buffered them; it reaches the client at the next Flush at the latest.
// Frame only reads frame: one frame, encoded once, may be written to many
// clients at once.
func (w *Writer) Frame(frame []byte) error {
	p := w.buffer()
	*p = append(*p, frame...)
	return w.buffered()
}

// buffered hands the buffer to the connection once it holds writeChunk
// bytes.
func (w *Writer) buffered() error {
	if len(*w.buf) < writeChunk {
		return nil
	}
	// A long burst: hand this much to the connection now rather than
	// growing the buffer. It goes out on the wire without a Flush, bar a
	// few bytes of chunk framing net/http keeps.
	return w.write()
}

// AppendEvent appends the SSE frame of one event (its id, name and data
// fields and the blank line ending it) to b. Writer.Event buffers exactly
// these bytes.
func AppendEvent(b []byte, id uint64, name string, data []byte) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, id, 10)
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
	return append(b, '\n')
}

// cutLine splits data at the first CR, LF or CRLF. JSON data has neither,
// so the common case is two vectorised scans that find nothing.
func cutLine(data []byte) (line, rest []byte, found bool) {
	i := bytes.IndexByte(data, '\n')
	end := data
	if i >= 0 {
		end = data[:i]
	}
	if j := bytes.IndexByte(end, '\r'); j >= 0 {
		if j+1 < len(data) && data[j+1] == '\n' {
			return data[:j], data[j+2:], true
		}
		return data[:j], data[j+1:], true
	}
	if i < 0 {
		return data, nil, false
	}
	return data[:i], data[i+1:], true
}

// Comment writes a comment line, which clients ignore, and flushes it.
func (w *Writer) Comment(text string) error {
	b := w.buffer()
	*b = append(append(append(*b, ": "...), text...), "\n\n"...)
	return w.Flush()
}

// Flush sends everything buffered and written so far to the client. One
// deadline covers handing over the buffer (at most about writeChunk bytes)
// and flushing net/http's own buffers behind it.
func (w *Writer) Flush() error {
	if err := w.deadline(); err != nil {
		return err
	}
	if err := w.writeBuffer(); err != nil {
		return err
	}
	if w.conn != nil {
		return nil // written: nothing is buffered behind it
	}
	return w.rc.Flush()
}

// buffer returns the pending buffer, borrowing one if there is none.
func (w *Writer) buffer() *[]byte {
	if w.buf == nil {
		w.buf = buffers.Get().(*[]byte)
		if w.conn != nil {
			*w.buf = append(*w.buf, make([]byte, chunkHead)...)
		}
	}
	return w.buf
}

// write hands the buffered events to the connection under a deadline of
// their own.
func (w *Writer) write() error {
	if err := w.deadline(); err != nil {
		return err
	}
	return w.writeBuffer()
}

// writeBuffer hands the buffered events to the connection and returns the
// buffer to the pool.
func (w *Writer) writeBuffer() error {
	b := w.buf
	if b == nil {
		return nil
	}
	w.buf = nil
	var err error
	switch n := len(*b) - chunkHead; {
	case w.conn == nil:
		_, err = w.w.Write(*b)
	case w.broken:
		// A write failed, maybe halfway through a chunk: what follows
		// would not parse.
		err = errBroken
	case n > 0:
		// One chunk: its size line in the room kept before the data.
		var head [chunkHead]byte
		h := strconv.AppendUint(head[:0], uint64(n), 16)
		h = append(h, "\r\n"...)
		start := chunkHead - len(h)
		copy((*b)[start:], h)
		*b = append(*b, "\r\n"...)
		_, err = w.conn.Write((*b)[start:])
		w.broken = err != nil
	}
	if cap(*b) <= maxPooled {
		*b = (*b)[:0]
		buffers.Put(b)
	}
	return err
}

// discard returns the pending buffer, unwritten, to the pool.
func (w *Writer) discard() {
	if b := w.buf; b != nil && cap(*b) <= maxPooled {
		*b = (*b)[:0]
		buffers.Put(b)
	}
	w.buf = nil
}

// deadline replaces the server's write deadline, which covers the whole
// response, with one for the next write only.
func (w *Writer) deadline() error {
	if w.conn != nil {
		return w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	err := w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	if errors.Is(err, http.ErrNotSupported) {
		return nil // e.g. httptest.ResponseRecorder: nothing to bound
	}
	return err
}
