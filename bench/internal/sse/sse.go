// Package sse is a Server-Sent Events client lean enough to read millions
// of events per run without becoming the bottleneck it measures.
package sse

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Stream is an open event stream. It is not safe for concurrent use.
type Stream struct {
	resp *http.Response
	r    *bufio.Reader
	line []byte // a line longer than the reader's buffer is gathered here

	// Name is the name of the event Next returned last.
	Name string
	// Data is its data; it is valid only until the next call to Next.
	Data []byte
}

// Open sends GET url with Accept: text/event-stream and returns the stream
// once the response headers have arrived with status 200.
func Open(ctx context.Context, c *http.Client, url string) (*Stream, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return &Stream{resp: resp, r: bufio.NewReaderSize(resp.Body, 64<<10)}, nil
}

// Next reads the next event; it returns io.EOF when the server ends the
// stream. Comments and the retry field are skipped; multi-line data is
// joined with "\n".
func (s *Stream) Next() error {
	s.Name, s.Data = "", s.Data[:0]
	data := false
	for {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && (s.Name != "" || data) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		switch {
		case len(line) == 0:
			if s.Name != "" || data {
				if s.Name == "" {
					s.Name = "message"
				}
				return nil
			}
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("event:")):
			s.Name = name(bytes.TrimSpace(line[len("event:"):]))
		case bytes.HasPrefix(line, []byte("data:")):
			v := line[len("data:"):]
			v = bytes.TrimPrefix(v, []byte(" "))
			if data {
				s.Data = append(s.Data, '\n')
			}
			s.Data, data = append(s.Data, v...), true
		}
	}
}

// Close ends the request.
func (s *Stream) Close() error { return s.resp.Body.Close() }

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

var names = []string{"output", "status", "complete", "connected", "error", "message"}

// name returns the event name as a string, without allocating for the
// names rdev sends.
func name(b []byte) string {
	for _, n := range names {
		if string(b) == n {
			return n
		}
	}
	return string(b)
}
