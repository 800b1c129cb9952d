package natsjs

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The hand-written encoder must produce exactly what encoding/json does.
func FuzzAppendLine(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "ctl\x00\x01\x1f\t\r", "<html>&", "\u2028\u2029é漢字", "\uFFFD"} {
		f.Add(s, []byte(nil), false, uint64(1))
	}
	f.Add("\uFFFD", []byte{0xff, 0xfe}, true, uint64(1<<63))
	f.Fuzz(func(t *testing.T, text string, raw []byte, partial bool, seq uint64) {
		if !utf8.ValidString(text) {
			t.Skip("Text is valid UTF-8 by contract")
		}
		l := contracts.OutputLine{V: 1, StreamID: "s1", JobID: "j1", Attempt: 2, Seq: seq, FD: contracts.Stderr,
			Text: text, Raw: raw, Partial: partial, Time: time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)}
		want, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendLine(nil, &l); !bytes.Equal(got, want) {
			t.Fatalf("appendLine\n got %s\nwant %s", got, want)
		}
	})
}

func BenchmarkAppendLine(b *testing.B) {
	l := contracts.OutputLine{V: 1, StreamID: "01M8EHWTY3MJZ7TJSM0AVCHVPR", JobID: "01M8EHWTY3MJZ7TJSM09WGTHYS", Attempt: 1,
		Seq: 123456, FD: contracts.Stdout, Text: "some typical line of build output: compiling package foo/bar", Time: time.Now()}
	b.Run("append", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = appendLine(buf[:0], &l)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(l)
		}
	})
}
