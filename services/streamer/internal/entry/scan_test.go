package entry

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// TestScanLineReadsWorkerLines checks that lines as the worker writes them,
// binary and partial ones included, are read by the scanner itself rather
// than by the encoding/json fallback.
func TestScanLineReadsWorkerLines(t *testing.T) {
	t.Parallel()
	for _, l := range []contracts.OutputLine{
		{Seq: 1, FD: contracts.Stdout, Text: "hello"},
		{Seq: 2, FD: contracts.Stderr, Text: "tab\there \"quoted\" <html> & é ✓ \x7f", Partial: true},
		{Seq: 3, FD: contracts.Stdout, Text: "\uFFFD", Raw: []byte{0xff, 0xfe}},
		{Seq: 1 << 40, FD: contracts.Stdout, Text: strings.Repeat("x", contracts.MaxLineBytes)},
	} {
		l.V, l.StreamID, l.JobID, l.Attempt, l.Time = contracts.Version, "s1", "j1", 1, time.Now()
		data, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		h, err := scanLine(data)
		if err != nil || h != (lineHeader{V: contracts.Version, Seq: l.Seq}) {
			t.Fatalf("scanLine(%.80s...) = %+v, %v", data, h, err)
		}
	}
}
