package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
	"github.com/rdev-dev/rdev/services/worker/internal/k8sexec"
	"github.com/rdev-dev/rdev/services/worker/internal/k8sexec/k8stest"
)

// kubernetesConfig is a worker running jobs through the fake API server.
func kubernetesConfig(t *testing.T, api *k8stest.Server) worker.Config {
	return worker.Config{
		Executor: worker.ExecutorKubernetes, KillGrace: 300 * time.Millisecond, UnavailableDelay: 100 * time.Millisecond,
		Kubernetes: worker.KubernetesConfig{
			REST: api.Config(), Namespace: "rdev", CreatePods: true, Workspace: t.TempDir(),
			ReadyTimeout: 10 * time.Second, BreakerFailures: 3, BreakerOpenFor: 300 * time.Millisecond,
		},
	}
}

// While the Kubernetes API is down, a job is handed back again and again
// without failing or spending its attempt; the breaker opens; once the API
// is back the breaker closes and the job runs, as attempt 1.
func TestKubernetesAPIDownJobWaitsAndRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	api := k8stest.New(t, k8stest.Options{AutoReady: true})
	api.SetDown(true)
	changes := make(chan string, 20)
	cfg := kubernetesConfig(t, api)
	cfg.Kubernetes.OnBreakerChange = func(_, to string) { changes <- to }
	b.start(cfg)
	b.enqueue(t, "k8sdown", "echo", "hello")

	waitChange(t, changes, "open")
	if evs := b.events.find("k8sdown", contracts.EventFailed, contracts.EventSucceeded); len(evs) != 0 {
		t.Fatalf("job ended while the API was down: %+v", evs)
	}
	// The job may be between two deliveries or in one (running, attempt 1).
	if st := b.state(t, "k8sdown"); st.Status.Final() || st.Attempt > 1 {
		t.Fatalf("state while the API is down: %s attempt %d; want not final, attempt 0 or 1", st.Status, st.Attempt)
	}
	api.SetDown(false)
	ev := b.next(t, "k8sdown", contracts.EventSucceeded, contracts.EventFailed)
	if ev.Type != contracts.EventSucceeded || ev.Attempt != 1 || ev.Lines != 1 {
		t.Fatalf("terminal event %+v; want succeeded, attempt 1, 1 line", ev)
	}
	waitChange(t, changes, "closed")
	b.waitQueueEmpty(t)
}

// A job whose pod is deleted while it runs fails with reason pod_lost.
func TestKubernetesPodDeletedFailsWithPodLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	api := k8stest.New(t, k8stest.Options{AutoReady: true})
	b.start(kubernetesConfig(t, api))
	b.enqueue(t, "k8slost", "sh", "-c", "echo started; sleep 60")
	await.Until(t, "the job exec'd", func() bool { return api.Execs() != 0 })
	api.DeletePod(t, "rdev", k8sexec.PodName("demo"))
	ev := b.next(t, "k8slost", contracts.EventFailed, contracts.EventSucceeded)
	if ev.Type != contracts.EventFailed || ev.Reason != contracts.ReasonPodLost {
		t.Fatalf("terminal event %+v; want failed with reason pod_lost", ev)
	}
}

// waitChange waits until the breaker goes to state to.
func waitChange(t *testing.T, changes <-chan string, to string) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case got := <-changes:
			if got == to {
				return
			}
		case <-timeout:
			t.Fatalf("the breaker did not go %s within 15s", to)
		}
	}
}

// A project's pod settings, read from its record in the access bucket,
// are on the pod the worker creates for it; a project without settings
// gets the template's container. Settings changed later apply when the
// pod is next created: the running pod is kept as it is.
func TestKubernetesProjectPodSettings(t *testing.T) {
	t.Parallel()
	b := setup(t)
	store := b.accessStore(t)
	ctx := context.Background()
	for _, p := range []access.Project{
		{ID: "tuned", Pod: &access.PodSettings{Image: "ghcr.io/acme/ws:1.2", CPU: "500m", Memory: "2Gi"}},
		{ID: "plain"},
	} {
		if err := store.CreateProject(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	api := k8stest.New(t, k8stest.Options{AutoReady: true})
	b.start(kubernetesConfig(t, api))
	run := func(id, project string) {
		t.Helper()
		b.submit(t, newJob(id, project, "true"))
		if ev := b.next(t, id, contracts.EventSucceeded, contracts.EventFailed); ev.Type != contracts.EventSucceeded {
			t.Fatalf("job %s: %+v; want succeeded", id, ev)
		}
	}
	container := func(project string) corev1.Container {
		t.Helper()
		for _, p := range api.Pods(t, "rdev") {
			if p.Name == k8sexec.PodName(project) && p.DeletionTimestamp == nil {
				return p.Spec.Containers[0]
			}
		}
		t.Fatalf("project %s has no pod", project)
		return corev1.Container{}
	}
	run("podtuned", "tuned")
	run("podplain", "plain")
	c := container("tuned")
	if c.Image != "ghcr.io/acme/ws:1.2" || c.Resources.Limits.Cpu().String() != "500m" || c.Resources.Limits.Memory().String() != "2Gi" {
		t.Errorf("tuned container image %q limits %v; want ghcr.io/acme/ws:1.2, cpu 500m, memory 2Gi", c.Image, c.Resources.Limits)
	}
	tmpl := k8sexec.DefaultPodTemplate().Spec.Containers[0]
	if c := container("plain"); c.Image != tmpl.Image || !equality.Semantic.DeepEqual(c.Resources, tmpl.Resources) {
		t.Errorf("plain container image %q resources %v; want the template's", c.Image, c.Resources)
	}

	if _, err := store.UpdateProject(ctx, "tuned", func(p *access.Project) error {
		p.Pod = &access.PodSettings{Image: "ghcr.io/acme/ws:2.0"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The running pod is not recreated for new settings; a job after the
	// change runs in it. (Whether the worker saw the change yet does not
	// matter: either way the pod stays.)
	run("podkept", "tuned")
	if c := container("tuned"); c.Image != "ghcr.io/acme/ws:1.2" || api.Creates() != 2 {
		t.Fatalf("after the change: image %q, %d creates; want the pod kept (ghcr.io/acme/ws:1.2, 2 creates)", c.Image, api.Creates())
	}
	// Once the pod is gone, the next one carries the new settings (as soon
	// as the worker has seen the change: bounded polling).
	i := 0
	await.Until(t, "a recreated pod with image ghcr.io/acme/ws:2.0", func() bool {
		api.DeletePod(t, "rdev", k8sexec.PodName("tuned"))
		run(fmt.Sprint("podnew", i), "tuned")
		i++
		return container("tuned").Image == "ghcr.io/acme/ws:2.0"
	})
}
