package sse_test

import (
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/streamer/internal/sse"
)

func TestWriterFormat(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	w := sse.NewWriter(rec, time.Second)
	if err := w.Open(1500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		w.Event(7, "output", []byte(`{"a":1}`)),
		w.Event(8, "status", []byte("one\ntwo\r\nthree\rfour")),
		w.Comment("ping"),
		w.Flush(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	want := "retry: 1500\n\n" +
		"id: 7\nevent: output\ndata: {\"a\":1}\n\n" +
		"id: 8\nevent: status\ndata: one\ndata: two\ndata: three\ndata: four\n\n" +
		": ping\n\n"
	if got := rec.Body.String(); got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" || !rec.Flushed {
		t.Fatalf("content type %q, flushed %v", ct, rec.Flushed)
	}
}

func TestEventsWaitForFlush(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	w := sse.NewWriter(rec, time.Second)
	if err := w.Open(time.Second); err != nil {
		t.Fatal(err)
	}
	opened := rec.Body.Len()
	if err := w.Event(1, "output", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if rec.Body.Len() != opened {
		t.Fatal("an event was written before Flush")
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := rec.Body.String()[opened:]; got != "id: 1\nevent: output\ndata: x\n\n" {
		t.Fatalf("after Flush: %q", got)
	}
}

func TestLongBurstsAreWrittenWithoutFlush(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	w := sse.NewWriter(rec, time.Second)
	data := []byte(strings.Repeat("x", 1000))
	for i := range 100 { // about 100 KB
		if err := w.Event(uint64(i), "output", data); err != nil {
			t.Fatal(err)
		}
	}
	if n := rec.Body.Len(); n < 64<<10 {
		t.Fatalf("%d bytes written before Flush: the writer buffers without bound", n)
	}
}

func TestDataLines(t *testing.T) {
	t.Parallel()
	for data, want := range map[string]string{
		"":       "data: \n",
		"a\r":    "data: a\ndata: \n",
		"\r\n":   "data: \ndata: \n",
		"a\n\nb": "data: a\ndata: \ndata: b\n",
		"a\rb\n": "data: a\ndata: b\ndata: \n",
		"a\nb\r": "data: a\ndata: b\ndata: \n",
	} {
		rec := httptest.NewRecorder()
		w := sse.NewWriter(rec, time.Second)
		if err := w.Event(1, "e", []byte(data)); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := rec.Body.String(); got != "id: 1\nevent: e\n"+want+"\n" {
			t.Errorf("data %q: got %q", data, got)
		}
	}
}

// A frame encoded once by AppendEvent and written with Frame reads as the
// same event written with Event, to any number of writers at once; none of
// them writes to the frame (the race detector would see it).
func TestFrameIsEventEncodedOnce(t *testing.T) {
	t.Parallel()
	data := []byte("{\"a\":\"é\"}\r\nsecond\rthird\n")
	var frame []byte
	frame = sse.AppendEvent(frame, 42, "output", data)
	frame = sse.AppendEvent(frame, 43, "complete", []byte(`{}`))
	frame = frame[:len(frame):len(frame)]
	orig := string(frame)

	want := httptest.NewRecorder()
	w := sse.NewWriter(want, time.Second)
	if w.Event(42, "output", data) != nil || w.Event(43, "complete", []byte(`{}`)) != nil || w.Flush() != nil {
		t.Fatal("event")
	}

	const writers = 50
	recs := make([]*httptest.ResponseRecorder, writers)
	var wg sync.WaitGroup
	for i := range recs {
		recs[i] = httptest.NewRecorder()
		wg.Go(func() {
			w := sse.NewWriter(recs[i], time.Second)
			for range 3 {
				if err := w.Frame(frame); err != nil {
					t.Error(err)
				}
			}
			if err := w.Flush(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i, rec := range recs {
		if got := rec.Body.String(); got != strings.Repeat(want.Body.String(), 3) {
			t.Fatalf("writer %d: got %q\nwant 3 x %q", i, got, want.Body.String())
		}
	}
	if string(frame) != orig {
		t.Fatalf("the frame changed: %q, was %q", frame, orig)
	}
}
