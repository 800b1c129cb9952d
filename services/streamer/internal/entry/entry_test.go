package entry_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

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
		{"line", contracts.SubjectOutput("p", "s1"), `{"v":2,"seq":7,"text":"x"}`, entry.Line, 7, false, false},
		{"line before the project was in the subject", contracts.SubjectOutputLegacy("s1"), `{"v":1,"seq":7,"text":"x"}`, entry.Line, 7, false, false},
		{"legacy subject of another stream", contracts.SubjectOutputLegacy("s2"), `{"v":1,"seq":1}`, entry.Invalid, 0, true, true},
		{"too many tokens", "rdev.output.p.s1.x", `{"v":2,"seq":1}`, entry.Invalid, 0, true, true},
		{"status", contracts.SubjectEvent("p", "s1", contracts.EventStarted), `{"v":1,"type":"started","lines":0}`, entry.Status, 0, false, false},
		{"complete", contracts.SubjectEvent("p", "s1", contracts.EventTimedOut), `{"v":1,"type":"timed_out","lines":9}`, entry.Complete, 9, false, false},
		{"other stream's line", contracts.SubjectOutput("p", "s2"), `{"v":1,"seq":1}`, entry.Invalid, 0, true, true},
		{"other stream's event", contracts.SubjectEvent("p", "s2", contracts.EventStarted), `{"v":1}`, entry.Invalid, 0, true, true},
		{"bad json", contracts.SubjectOutput("p", "s1"), `{`, entry.Invalid, 0, true, false},
		{"newer version", contracts.SubjectOutput("p", "s1"), `{"v":99,"seq":1}`, entry.Invalid, 0, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := entry.Parse("s1", tc.subject, 42, []byte(tc.data))
			if (err != nil) != tc.wantErr || errors.Is(err, entry.ErrForeign) != tc.wantForeign {
				t.Fatalf("err %v", err)
			}
			if e.StreamSeq != 42 || e.Line != tc.line || (err == nil && e.Kind != tc.kind) || string(e.Data) != tc.data {
				t.Fatalf("entry %+v", e)
			}
		})
	}
}

// FuzzParse holds Parse's reading of output lines to encoding/json's: for
// any input, Parse fails exactly when decoding v and seq with json.Unmarshal
// fails (or v is too new), and otherwise yields the same seq, with the data
// untouched.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"stream_id":"01M8EHXFWDNM0KGVR1F0JQPHHF","job_id":"01M8EHXFWDNM0KGVR1EZYXASN1","attempt":1,"seq":500000,"fd":"stdout","text":"500000","time":"2026-11-27T13:27:36.123456789Z"}`,
		`{"v":1,"seq":3,"fd":"stderr","text":"caf\u00e9 \"q\" \\ \/ \b\f\n\r\t","raw":"/w==","partial":true}`,
		"{\"v\":1,\"seq\":2,\"text\":\"héllo \xff\"}",
		` { "V" : 1 , "SEQ" : 18446744073709551615 } `,
		`{"v":1,"seq":18446744073709551616}`,
		`{"v":-9223372036854775808,"seq":0}`,
		`{"v":-9223372036854775809}`,
		`{"v":1.0,"seq":1}`,
		`{"v":1,"seq":-0}`,
		`{"v":-0,"seq":1e2}`,
		`{"v":"1","seq":1}`,
		`{"v":null,"seq":null}`,
		`{"seq":1,"seq":2,"seq":null}`,
		`{"v":true}`,
		`{"v":1,"seq":01}`,
		`{"v":1,"seq":1,}`,
		`{"v":1 "seq":1}`,
		`{"v":1,"seq":1}x`,
		`{"v":1,"seq":1}{}`,
		`{"text":"a` + "\x01" + `b"}`,
		`{"text":"\u12G4"}`,
		`{"text":"\x"}`,
		`{"a":{"seq":9},"seq":[1],"v":1}`,
		`{"s\u0065q":4}`,
		"{\"\u017feq\":5}",
		`{"seq":5`,
		`{"seq":`,
		`{"`,
		`{}`,
		`[]`,
		`null`,
		`"x"`,
		``,
		` `,
		`{"v":1,"seq":2,"x":tru}`,
		`{"v":1,"seq":2,"x":falsey}`,
		`{"v":1,"seq":2,"x":nul}`,
		`{"x":-}`,
		`{"x":1.}`,
		`{"x":1e}`,
		`{"x":1e+}`,
		`{"x":-01}`,
		`{"x":0.5e-3,"seq":7}`,
	} {
		f.Add([]byte(s))
	}
	subject := contracts.SubjectOutput("p", "s1")
	f.Fuzz(func(t *testing.T, data []byte) {
		var ref struct {
			V   int    `json:"v"`
			Seq uint64 `json:"seq"`
		}
		refErr := json.Unmarshal(data, &ref)
		wantErr := refErr != nil || ref.V > contracts.OutputLineVersion

		e, err := entry.Parse("s1", subject, 42, data)
		if (err != nil) != wantErr {
			t.Fatalf("Parse(%q): err %v, json.Unmarshal: %v (v %d)", data, err, refErr, ref.V)
		}
		if e.StreamSeq != 42 || len(e.Data) != len(data) || (len(data) > 0 && &e.Data[0] != &data[0]) {
			t.Fatalf("Parse(%q): entry %+v does not carry the stored data", data, e)
		}
		if err == nil && (e.Kind != entry.Line || e.Line != ref.Seq) {
			t.Fatalf("Parse(%q): kind %d line %d, json.Unmarshal: seq %d", data, e.Kind, e.Line, ref.Seq)
		}
	})
}

func BenchmarkParseLine(b *testing.B) {
	data, _ := json.Marshal(contracts.OutputLine{
		V: contracts.Version, StreamID: "01M8EHXFWDNM0KGVR1F0JQPHHF", JobID: "01M8EHXFWDNM0KGVR1EZYXASN1", Attempt: 1,
		Seq: 500000, FD: contracts.Stdout, Text: "500000", Time: time.Now().UTC(),
	})
	subject := contracts.SubjectOutput("demo", "01M8EHXFWDNM0KGVR1F0JQPHHF")
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := entry.Parse("01M8EHXFWDNM0KGVR1F0JQPHHF", subject, 1, data); err != nil {
			b.Fatal(err)
		}
	}
}
