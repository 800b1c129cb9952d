// Package lines cuts a command's output streams into the lines the worker
// publishes, one contracts.OutputLine each.
//
// The rules, shared by every reader of the output stream:
//   - A line ends at '\n', which is not part of it. One '\r' right before the
//     '\n' is dropped too, so "a\r\n" and "a\n" both give "a"; any other '\r'
//     is kept.
//   - A line longer than max bytes is cut into chunks of exactly max bytes,
//     with Partial set on every chunk but the last; the last holds the rest
//     (1 to max bytes). So a line never splits into a full chunk and an empty
//     remainder.
//   - Output that does not end with '\n' gives a last line with Partial set,
//     emitted by Close.
//
// Joining the lines back, with '\n' after each line that is not Partial,
// gives the output with every "\r\n" replaced by "\n".
package lines

import (
	"bytes"
	"errors"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Line is one line of output, without its newline.
type Line struct {
	// FD is the stream the line was read from.
	FD contracts.FD
	// Data is the line's bytes. It is only valid during the emit call that
	// receives it: the Writer reuses it (and the bytes it was written), so
	// emit must copy Data to keep it, and must not modify it.
	Data []byte
	// Partial is set when the line did not end with a newline: it is a chunk
	// of a longer line and continues in the next Line, or the output ended.
	Partial bool
}

// Writer is an io.Writer that cuts what is written into lines and hands each
// to emit, in order, as soon as the line is known to be complete (see the
// package documentation for the rules).
//
// A Writer is not safe for concurrent use; use one per stream. In the steady
// state it does not allocate: lines wholly inside one Write are emitted
// straight from the written bytes, and the rest is buffered in a buffer
// grown on first use (up to max+1 bytes) and kept. A command that prints
// nothing, or only lines that each arrive in one write, never needs it:
// allocated up front it was most of what a short job allocated.
type Writer struct {
	fd   contracts.FD
	max  int
	emit func(Line) error
	// buf holds the start of the current line, not yet emitted: at most max
	// bytes, or max+1 when the last one is a '\r' that may still turn out to
	// precede a '\n'.
	buf    []byte
	err    error // sticky: the first error of emit, or errClosed
	closed bool
}

var errClosed = errors.New("lines: write after close")

// NewWriter returns a Writer emitting the lines of stream fd, cut at limit
// bytes (normally contracts.MaxLineBytes). It panics if limit is not positive.
func NewWriter(fd contracts.FD, limit int, emit func(Line) error) *Writer {
	if limit <= 0 {
		panic("lines: limit must be positive")
	}
	return &Writer{fd: fd, max: limit, emit: emit}
}

// Write cuts p into lines, emits every line it completes and buffers the
// rest. It returns emit's first error; the Writer then refuses further
// writes with that error, and n counts the bytes of p handled before the
// line that failed.
func (w *Writer) Write(p []byte) (n int, err error) {
	if w.err != nil {
		return 0, w.err
	}
	for len(p) > n {
		rest := p[n:]
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			err = w.add(rest)
		} else {
			err = w.end(rest[:i])
			i++
		}
		if err != nil {
			w.err = err
			return n, err
		}
		if i < 0 {
			return len(p), nil
		}
		n += i
	}
	return n, nil
}

// Close emits what is buffered as a last line with Partial set, if there is
// anything buffered, and returns the Writer's error. Writes after Close fail;
// a second Close only returns the error again.
func (w *Writer) Close() error {
	if w.closed {
		if errors.Is(w.err, errClosed) {
			return nil
		}
		return w.err
	}
	w.closed = true
	if w.err != nil {
		return w.err
	}
	var err error
	if len(w.buf) > w.max { // the held '\r' is data: no '\n' follows
		err = w.emitChunk(w.buf[:w.max], true)
		w.buf = append(w.buf[:0], w.buf[w.max])
	}
	if err == nil && len(w.buf) > 0 {
		err = w.emitChunk(w.buf, true)
	}
	w.buf = w.buf[:0]
	if err != nil {
		w.err = err
		return err
	}
	w.err = errClosed
	return nil
}

// add takes seg, which has no '\n', as the continuation of the current line,
// emitting the full chunks it completes.
func (w *Writer) add(seg []byte) error {
	// Long segments are emitted in place while nothing is buffered. A chunk
	// is full only once a byte follows it that cannot end the line, which a
	// lone trailing '\r' might still do.
	for len(w.buf) == 0 && (len(seg) > w.max+1 || len(seg) == w.max+1 && seg[w.max] != '\r') {
		if err := w.emitChunk(seg[:w.max], true); err != nil {
			return err
		}
		seg = seg[w.max:]
	}
	for {
		if len(w.buf) > w.max && (w.buf[w.max] != '\r' || len(seg) > 0) {
			if err := w.emitChunk(w.buf[:w.max], true); err != nil {
				return err
			}
			w.buf = append(w.buf[:0], w.buf[w.max])
		}
		if len(seg) == 0 {
			return nil
		}
		k := min(len(seg), w.max+1-len(w.buf))
		w.buf = append(w.buf, seg[:k]...)
		seg = seg[k:]
	}
}

// end takes seg, the bytes before a '\n', as the end of the current line and
// emits the line's remaining chunks.
func (w *Writer) end(seg []byte) error {
	switch {
	case len(seg) > 0 && seg[len(seg)-1] == '\r':
		seg = seg[:len(seg)-1]
	case len(seg) == 0 && len(w.buf) > 0 && w.buf[len(w.buf)-1] == '\r':
		w.buf = w.buf[:len(w.buf)-1]
	}
	if len(w.buf) > 0 {
		if len(w.buf) > w.max { // the held '\r' is data: seg follows it
			if err := w.emitChunk(w.buf[:w.max], true); err != nil {
				return err
			}
			w.buf = append(w.buf[:0], w.buf[w.max])
		}
		k := min(len(seg), w.max-len(w.buf))
		w.buf = append(w.buf, seg[:k]...)
		seg = seg[k:]
		last := len(seg) == 0
		err := w.emitChunk(w.buf, !last)
		w.buf = w.buf[:0]
		if err != nil || last {
			return err
		}
	}
	for len(seg) > w.max {
		if err := w.emitChunk(seg[:w.max], true); err != nil {
			return err
		}
		seg = seg[w.max:]
	}
	return w.emitChunk(seg, false)
}

func (w *Writer) emitChunk(data []byte, partial bool) error {
	return w.emit(Line{FD: w.fd, Data: data, Partial: partial})
}
