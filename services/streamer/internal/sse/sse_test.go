package sse_test

import (
	"net/http/httptest"
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
		w.Event("7", "output", []byte(`{"a":1}`)),
		w.Event("8", "status", []byte("one\ntwo\r\nthree\rfour")),
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
