package k8sexec_test

import (
	"bytes"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/worker/internal/executor"
	"github.com/rdev-dev/rdev/services/worker/internal/k8sexec"
	"github.com/rdev-dev/rdev/services/worker/internal/k8sexec/k8stest"
	"github.com/rdev-dev/rdev/services/worker/internal/localexec"
)

// BenchmarkExecOverhead compares the Kubernetes executor, through the fake
// API server over WebSocket (the API server's translator makes two hops:
// WebSocket to the client, SPDY to the kubelet, as in a cluster) and over
// SPDY only, with the local executor, in one run: the time from Exec to
// the first line of `echo hi`, and lines/s of `seq 1 2000000`. The fake
// API server, "kubelet" and client share this process's CPUs.
//
//	go test -run '^$' -bench ExecOverhead ./services/worker/internal/k8sexec/
func BenchmarkExecOverhead(b *testing.B) {
	executors := map[string]func(b *testing.B) executor.Executor{
		"local": func(b *testing.B) executor.Executor {
			ex, err := localexec.New(localexec.Config{Root: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			return ex
		},
		"kubernetes": func(b *testing.B) executor.Executor {
			return benchK8s(b, false)
		},
		"kubernetes-spdy": func(b *testing.B) executor.Executor {
			return benchK8s(b, true)
		},
	}
	for _, name := range []string{"local", "kubernetes", "kubernetes-spdy"} {

		b.Run(name+"/first-line", func(b *testing.B) {
			ex := executors[name](b)
			run(b, ex, "echo", "hi") // the pod is created once, not measured
			var total time.Duration
			b.ResetTimer()
			for range b.N {
				total += run(b, ex, "echo", "hi").first
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-to-first-line")
		})
		b.Run(name+"/lines", func(b *testing.B) {
			ex := executors[name](b)
			run(b, ex, "echo", "hi")
			const n = 2000000
			var total time.Duration
			b.ResetTimer()
			for range b.N {
				r := run(b, ex, "seq", "1", "2000000")
				if r.lines != n {
					b.Fatalf("%d lines, want %d", r.lines, n)
				}
				total += r.took
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "lines/s")
		})
	}
}

// benchK8s is a Kubernetes executor on a fake API server, SPDY-only or not.
func benchK8s(b *testing.B, spdyOnly bool) executor.Executor {
	api := k8stest.New(b, k8stest.Options{AutoReady: true, SPDYOnly: spdyOnly})
	ex, err := k8sexec.New(k8sexec.Config{Namespace: namespace, CreatePods: true, Workspace: b.TempDir()}, api.Config())
	if err != nil {
		b.Fatal(err)
	}
	return ex
}

type benchResult struct {
	first, took time.Duration
	lines       int64
}

// run execs argv once, timing the first line and the whole run.
func run(b *testing.B, ex executor.Executor, argv ...string) benchResult {
	b.Helper()
	w := &countWriter{start: time.Now()}
	code, err := ex.Exec(b.Context(), executor.Spec{JobID: "bench", Project: "bench", Command: argv}, w, io.Discard)
	if err != nil || code != 0 {
		b.Fatalf("Exec = %d, %v", code, err)
	}
	return benchResult{first: time.Duration(w.first.Load()), took: time.Since(w.start), lines: w.lines}
}

// countWriter counts lines and notes when the first arrived.
type countWriter struct {
	start time.Time
	first atomic.Int64
	lines int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	n := bytes.Count(p, []byte{'\n'})
	if n > 0 && w.lines == 0 {
		w.first.Store(int64(time.Since(w.start)))
	}
	w.lines += int64(n)
	return len(p), nil
}
