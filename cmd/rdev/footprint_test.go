package main

import (
	"os/exec"
	"strings"
	"testing"
)

// Every rdev process (api, worker, streamer, notifier, the CLI) runs this
// one binary, so every package it links is mapped, and every package's
// init runs, in each of them, whatever the process serves. client-go's
// clientset registers all of Kubernetes' API groups at init: with it, an
// idle worker or streamer held about 17 MiB more (docs/performance.md,
// Baseline memory). The Kubernetes executor needs core/v1 pods alone and
// reaches them through a REST client of its own (k8sexec.corePods).
func TestBinaryLinksNoClientset(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for dep := range strings.Lines(string(out)) {
		dep = strings.TrimSpace(dep)
		if dep == "k8s.io/client-go/kubernetes" || strings.HasPrefix(dep, "k8s.io/client-go/kubernetes/") ||
			strings.HasPrefix(dep, "k8s.io/api/") && dep != "k8s.io/api/core/v1" {
			t.Errorf("rdev links %s: every rdev process would map it and run its init", dep)
		}
	}
}
