package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/telemetry"
)

// TestOneTraceFromSubmitToStream runs a job end to end with every span
// recorded and checks that one trace, the caller's, covers the API's
// request and publish, the worker's handling, exec and output, and the
// streamer's delivery, with the worker's spans children of the publish
// span across the NATS hop.
func TestOneTraceFromSubmitToStream(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	n := startInProcessWith(t, telemetry.Config{SpanExporter: spans})
	if s, b := call(t, http.MethodPost, n.http+"/v1/projects", map[string]string{"id": "traced"}); s != http.StatusCreated {
		t.Fatalf("create project: %d %s", s, b)
	}

	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	body := `{"command":["sh","-c","echo one; echo two"]}`
	req, _ := http.NewRequest(http.MethodPost, n.http+"/v1/projects/traced/commands", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+callerTrace+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	must(t, err, "submit")
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var reply contracts.SubmitResponse
	must(t, json.Unmarshal(rb, &reply), "decode %s", rb)
	if resp.StatusCode != http.StatusAccepted || reply.TraceID != callerTrace {
		t.Fatalf("submit: %d %s; want 202 with trace_id %s", resp.StatusCode, rb, callerTrace)
	}
	lines, end := watch(t, n.http, reply.EventsURL)
	if len(lines) != 2 || end.Type != contracts.EventSucceeded {
		t.Fatalf("stream: %d lines, end %+v", len(lines), end)
	}
	if st := getJob(t, n.http, reply.JobID); st.TraceID != callerTrace {
		t.Errorf("GET job trace_id %q, want %q", st.TraceID, callerTrace)
	}

	// The delivery span ends once the handler returns, just after the
	// complete event reached the client.
	want := []string{"POST /v1/projects/:project/commands", "publish RDEV_JOBS", "rdev.job.queued", "process RDEV_JOBS",
		"rdev.exec", "rdev.output", "rdev.stream.deliver", "rdev.stream.replay"}
	var byName map[string]tracetest.SpanStub
	deadline := time.Now().Add(10 * time.Second)
	for {
		byName = map[string]tracetest.SpanStub{}
		for _, s := range spans.GetSpans() {
			if s.SpanContext.TraceID().String() == callerTrace {
				byName[s.Name] = s
			}
		}
		missing := false
		for _, name := range want {
			_, ok := byName[name]
			missing = missing || !ok
		}
		if !missing {
			break
		}
		if time.Now().After(deadline) {
			var got []string
			for name := range byName {
				got = append(got, name)
			}
			t.Fatalf("spans in trace %s: %v; want all of %v", callerTrace, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}

	service := func(s tracetest.SpanStub) string {
		for _, kv := range s.Resource.Attributes() {
			if kv.Key == "service.name" {
				return kv.Value.AsString()
			}
		}
		return ""
	}
	parentOf := func(child, parent string) {
		t.Helper()
		if got := byName[child].Parent.SpanID(); got != byName[parent].SpanContext.SpanID() {
			t.Errorf("parent of %q is %s, want %q (%s)", child, got, parent, byName[parent].SpanContext.SpanID())
		}
	}
	for name, svc := range map[string]string{
		"POST /v1/projects/:project/commands": telemetry.ServiceAPI, "publish RDEV_JOBS": telemetry.ServiceAPI,
		"process RDEV_JOBS": telemetry.ServiceWorker, "rdev.exec": telemetry.ServiceWorker, "rdev.output": telemetry.ServiceWorker,
		"rdev.stream.deliver": telemetry.ServiceStreamer, "rdev.stream.replay": telemetry.ServiceStreamer,
	} {
		if got := service(byName[name]); got != svc {
			t.Errorf("span %q from service %q, want %q", name, got, svc)
		}
	}
	if p := byName["POST /v1/projects/:project/commands"].Parent; p.SpanID().String() != "00f067aa0ba902b7" || !p.IsRemote() {
		t.Errorf("request span's parent %s, want the caller's 00f067aa0ba902b7", p.SpanID())
	}
	parentOf("publish RDEV_JOBS", "POST /v1/projects/:project/commands")
	parentOf("process RDEV_JOBS", "publish RDEV_JOBS") // across NATS, from the job message's trace field
	if !byName["process RDEV_JOBS"].Parent.IsRemote() {
		t.Error("worker span's parent is not remote")
	}
	parentOf("rdev.job.queued", "publish RDEV_JOBS")
	parentOf("rdev.exec", "process RDEV_JOBS")
	parentOf("rdev.output", "process RDEV_JOBS")
	parentOf("rdev.stream.deliver", "POST /v1/projects/:project/commands") // from the stream ref
	parentOf("rdev.stream.replay", "rdev.stream.deliver")
	if byName["process RDEV_JOBS"].SpanKind != trace.SpanKindConsumer || byName["publish RDEV_JOBS"].SpanKind != trace.SpanKindProducer {
		t.Error("publish/process spans are not producer/consumer")
	}
	// The SSE request's own span (its own trace) is linked from the delivery.
	if links := byName["rdev.stream.deliver"].Links; len(links) != 1 || links[0].SpanContext.TraceID().String() == callerTrace {
		t.Errorf("delivery span links %+v, want one to the SSE request's span", links)
	}
}

// TestTraceIDWithoutCaller: without a traceparent (and without tracing
// configured) a job still gets a trace id of its own.
func TestTraceIDWithoutCaller(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	r := submit(t, n.http, "untraced", map[string]any{"command": []string{"true"}})
	st := waitFinal(t, n.http, r.JobID, 30*time.Second)
	if len(st.TraceID) != 32 || strings.Trim(st.TraceID, "0") == "" {
		t.Errorf("trace_id %q, want 32 hex digits", st.TraceID)
	}
}
