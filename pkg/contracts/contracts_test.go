package contracts_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

func TestSubjectsUseOnlySafeTokens(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ got, want string }{
		{contracts.SubjectJob(contracts.PriorityHigh, "demo"), "rdev.jobs.high.demo"},
		{contracts.SubjectJobsAt(contracts.PriorityLow), "rdev.jobs.low.>"},
		{contracts.SubjectOutput("demo", "s1"), "rdev.output.demo.s1"},
		{contracts.SubjectOutputLegacy("s1"), "rdev.output.s1"},
		{contracts.SubjectStreamOutput("s1"), "rdev.output.*.s1"},
		{contracts.SubjectProjectOutput("demo"), "rdev.output.demo.>"},
		{contracts.SubjectProjectEvents("demo"), "rdev.events.demo.>"},
		{contracts.SubjectProjectStreams("demo"), "rdev.*.demo.>"},
		{contracts.SubjectEvent("demo", "s1", contracts.EventStarted), "rdev.events.demo.s1.started"},
		{contracts.SubjectStreamEvents("s1"), "rdev.events.*.s1.*"},
		{strings.Join(contracts.SubjectEventsOf(contracts.EventQueued, contracts.EventExpired), " "), "rdev.events.*.*.queued rdev.events.*.*.expired"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestValidProjectID(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]bool{
		"demo": true, "a": true, "a-b-9": true, strings.Repeat("a", 63): true,
		"": false, "-a": false, "a-": false, "A": false, "a.b": false, "a*": false,
		"a>": false, "a b": false, strings.Repeat("a", 64): false,
	} {
		if got := contracts.ValidProjectID(id); got != want {
			t.Errorf("ValidProjectID(%q) = %v, want %v", id, got, want)
		}
	}
	for id, want := range map[string]bool{
		"01HX_abc-1": true, "": false, "a.b": false, "a>": false, strings.Repeat("x", 65): false,
	} {
		if got := contracts.ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestParsePriority(t *testing.T) {
	t.Parallel()
	if p, err := contracts.ParsePriority(""); err != nil || p != contracts.PriorityNormal {
		t.Fatalf("empty priority: got %q, %v", p, err)
	}
	if _, err := contracts.ParsePriority("urgent"); err == nil {
		t.Fatal("urgent: want an error")
	}
}

func TestStatusOfTerminalEvents(t *testing.T) {
	t.Parallel()
	for _, et := range []contracts.EventType{contracts.EventSucceeded, contracts.EventFailed, contracts.EventCancelled, contracts.EventTimedOut} {
		if !et.Terminal() || !contracts.StatusOf(et).Final() {
			t.Errorf("%s: want terminal and final", et)
		}
	}
	for _, s := range []contracts.Status{contracts.StatusSucceeded, contracts.StatusFailed, contracts.StatusCancelled, contracts.StatusTimedOut} {
		if got := contracts.StatusOf(contracts.EndOf(s)); got != s {
			t.Errorf("StatusOf(EndOf(%s)) = %s", s, got)
		}
	}
	if contracts.EventStarted.Terminal() || contracts.StatusOf(contracts.EventStarted).Final() {
		t.Error("started must not be terminal")
	}
}

func TestOutputLineRawOnlyWhenSet(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(contracts.OutputLine{V: 1, Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"raw"`) {
		t.Fatalf("raw present for a valid line: %s", b)
	}
	b, _ = json.Marshal(contracts.OutputLine{V: 1, Text: "\uFFFD", Raw: []byte{0xff}})
	if !strings.Contains(string(b), `"raw":"/w=="`) {
		t.Fatalf("raw not base64: %s", b)
	}
}

func TestTraceIDAndQueuedState(t *testing.T) {
	t.Parallel()
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	for tp, want := range map[string]string{
		"00-" + id + "-00f067aa0ba902b7-01": id,
		"":                                  "",
		"garbage":                           "",
		"00-" + strings.ToUpper(id) + "-00f067aa0ba902b7-01": "",
		"00-" + id + "-00f067aa0ba902b7-0":                   "",
		"00_" + id + "-00f067aa0ba902b7-01":                  "",
	} {
		if got := contracts.TraceID(map[string]string{"traceparent": tp}); got != want {
			t.Errorf("TraceID(%q) = %q, want %q", tp, got, want)
		}
	}
	job := contracts.Job{ID: "j", StreamID: "s", Trace: map[string]string{"traceparent": "00-" + id + "-00f067aa0ba902b7-01"}}
	if st := contracts.QueuedState(job); st.TraceID != id || st.Status != contracts.StatusQueued || st.JobID != "j" {
		t.Errorf("QueuedState = %+v, want queued j with trace id %s", st, id)
	}
}

// EventTypes names every EventType constant: consumers filter on it, so a
// type left out would never reach them.
func TestEventTypesListsEveryType(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "event.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			v := spec.(*ast.ValueSpec)
			if id, ok := v.Type.(*ast.Ident); ok && id.Name == "EventType" {
				for _, n := range v.Names {
					declared = append(declared, n.Name)
				}
			}
		}
	}
	listed := contracts.EventTypes()
	if len(declared) != len(listed) {
		t.Fatalf("event.go declares %d event types %v; EventTypes lists %d %v", len(declared), declared, len(listed), listed)
	}
	seen := map[contracts.EventType]bool{}
	for _, et := range listed {
		if seen[et] {
			t.Errorf("%s listed twice", et)
		}
		seen[et] = true
	}
}
