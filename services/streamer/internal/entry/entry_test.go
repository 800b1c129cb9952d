package entry_test

import (
	"errors"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
)

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		subject     string
		data        string
		kind        entry.Kind
		line        uint64
		wantErr     bool
		wantForeign bool
	}{
		{"line", contracts.SubjectOutput("s1"), `{"v":1,"seq":7,"text":"x"}`, entry.Line, 7, false, false},
		{"status", contracts.SubjectEvent("p", "s1", contracts.EventStarted), `{"v":1,"type":"started","lines":0}`, entry.Status, 0, false, false},
		{"complete", contracts.SubjectEvent("p", "s1", contracts.EventTimedOut), `{"v":1,"type":"timed_out","lines":9}`, entry.Complete, 9, false, false},
		{"other stream's line", contracts.SubjectOutput("s2"), `{"v":1,"seq":1}`, entry.Invalid, 0, true, true},
		{"other stream's event", contracts.SubjectEvent("p", "s2", contracts.EventStarted), `{"v":1}`, entry.Invalid, 0, true, true},
		{"bad json", contracts.SubjectOutput("s1"), `{`, entry.Invalid, 0, true, false},
		{"newer version", contracts.SubjectOutput("s1"), `{"v":99,"seq":1}`, entry.Invalid, 0, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := entry.Parse("s1", tc.subject, 42, []byte(tc.data))
			if (err != nil) != tc.wantErr || errors.Is(err, entry.ErrForeign) != tc.wantForeign {
				t.Fatalf("err %v", err)
			}
			if e.Seq != 42 || e.Line != tc.line || (err == nil && e.Kind != tc.kind) || string(e.Data) != tc.data {
				t.Fatalf("entry %+v", e)
			}
		})
	}
}
