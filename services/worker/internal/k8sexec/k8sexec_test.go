package k8sexec_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"


	"github.com/rdev-dev/rdev/services/worker/internal/executor"
	"github.com/rdev-dev/rdev/services/worker/internal/executor/executortest"
	"github.com/rdev-dev/rdev/services/worker/internal/k8sexec"
	"github.com/rdev-dev/rdev/services/worker/internal/k8sexec/k8stest"
)

const namespace = "rdev-test"

// bundle is what a test works with: an executor, the fake API server it
// talks to, and the workspace directory its commands run in.
type bundle struct {
	ex        *k8sexec.Executor
	api       *k8stest.Server
	workspace string
	cfg       k8sexec.Config
}

// setup starts a fake API server with opts and an executor on it; edit
// may change the executor's configuration.
func setup(t *testing.T, opts k8stest.Options, edit func(*k8sexec.Config)) bundle {
	t.Helper()
	api := k8stest.New(t, opts)
	b := bundle{api: api, workspace: t.TempDir()}
	b.cfg = k8sexec.Config{
		Namespace: namespace, CreatePods: true, Workspace: b.workspace,
		KillGrace: 300 * time.Millisecond, ReadyTimeout: 20 * time.Second,
		Log: slog.New(slog.NewTextHandler(tWriter{t}, nil)),
	}
	if edit != nil {
		edit(&b.cfg)
	}
	ex, err := k8sexec.New(b.cfg, api.Config())
	if err != nil {
		t.Fatal(err)
	}
	b.ex = ex
	return b
}

// tWriter sends logs to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}



func TestConformanceWebSocket(t *testing.T) {
	t.Parallel()
	executortest.Run(t, func(t *testing.T) executor.Executor {
		return setup(t, k8stest.Options{AutoReady: true}, nil).ex
	})
}

func TestConformanceSPDY(t *testing.T) {
	t.Parallel()
	executortest.Run(t, func(t *testing.T) executor.Executor {
		return setup(t, k8stest.Options{AutoReady: true, SPDYOnly: true}, nil).ex
	})
}
