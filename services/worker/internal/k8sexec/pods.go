package k8sexec

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/rdev-dev/rdev/services/worker/internal/executor"
)

// podFinder finds or creates project pods. Concurrent requests for one
// project share one lookup (and so one creation); another worker creating
// the same pod at the same time is caught by the pod's fixed name.
type podFinder struct {
	e        *Executor
	mu       sync.Mutex
	inflight map[string]*podCall
}

// podCall is one shared lookup.
type podCall struct {
	done chan struct{}
	pod  *corev1.Pod
	err  error
}

// errReadyTimeout is the cause of a wait for Ready that ran out of time.
var errReadyTimeout = errors.New("ready timeout")

// ready returns project's Ready pod, creating it when allowed and waiting
// for it within the ready timeout. The shared lookup does not end with
// one caller's ctx; each caller stops waiting for it when its ctx ends.
func (f *podFinder) ready(ctx context.Context, project string) (*corev1.Pod, error) {
	f.mu.Lock()
	c, ok := f.inflight[project]
	if !ok {
		c = &podCall{done: make(chan struct{})}
		f.inflight[project] = c
		go func() {
			c.pod, c.err = f.lookup(context.WithoutCancel(ctx), project)
			f.mu.Lock()
			delete(f.inflight, project)
			f.mu.Unlock()
			close(c.done)
		}()
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.pod, c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("command not started: waiting for the pod: %w", context.Cause(ctx))
	}
}

// lookup finds project's pod and waits until it is Ready: it lists the
// pods with the project's label, creates one if there is none (once), and
// watches them from the list's resource version until one is Ready, all
// are beyond hope, or the ready timeout passes.
func (f *podFinder) lookup(ctx context.Context, project string) (*corev1.Pod, error) {
	e := f.e
	ctx, cancel := context.WithTimeoutCause(ctx, e.cfg.ReadyTimeout, errReadyTimeout)
	defer cancel()
	selector := LabelProject + "=" + project
	created := false
	why := "no pod"
	for {
		var list *corev1.PodList
		err := e.call(ctx, "list pods", func(ctx context.Context) (err error) {
			list, err = e.core.list(ctx, e.cfg.Namespace, metav1.ListOptions{LabelSelector: selector})
			return err
		})
		if err != nil {
			return nil, f.waitErr(ctx, project, why, err)
		}
		pods := map[string]*corev1.Pod{}
		for i := range list.Items {
			pods[list.Items[i].Name] = &list.Items[i]
		}
		pod, verdict := choose(pods)
		switch {
		case pod != nil && podReady(pod):
			return pod, nil
		case pod == nil && verdict != "":
			return nil, fmt.Errorf("%w: project %s: %s", executor.ErrNotReady, project, verdict)
		case pod == nil && len(pods) == 0:
			if !e.cfg.CreatePods {
				return nil, fmt.Errorf("%w: project %s has no pod labelled %s in namespace %s and pod creation is disabled",
					executor.ErrNotReady, project, selector, e.cfg.Namespace)
			}
			if !created {
				created = true
				made, err := f.create(ctx, project)
				if err != nil {
					return nil, f.waitErr(ctx, project, why, err)
				}
				if made != nil {
					// What we know of it if the API is too slow to list it
					// before the ready timeout.
					why = describe(made)
				}
				continue
			}
		}
		if pod != nil {
			why = describe(pod)
		}
		var w watch.Interface
		err = e.call(ctx, "watch pods", func(ctx context.Context) (err error) {
			w, err = e.core.watch(ctx, e.cfg.Namespace, metav1.ListOptions{
				LabelSelector: selector, ResourceVersion: list.ResourceVersion,
			})
			return err
		})
		if err != nil {
			return nil, f.waitErr(ctx, project, why, err)
		}
		pod, verdict, why = watchReady(ctx, w, pods, why)
		w.Stop()
		switch {
		case pod != nil:
			return pod, nil
		case verdict != "":
			return nil, fmt.Errorf("%w: project %s: %s", executor.ErrNotReady, project, verdict)
		case ctx.Err() != nil:
			return nil, f.waitErr(ctx, project, why, context.Cause(ctx))
		}
		// The watch ended (API timeout, a pod gone): list again.
	}
}

// waitErr explains why no Ready pod was found.
func (f *podFinder) waitErr(ctx context.Context, project, why string, err error) error {
	if errors.Is(context.Cause(ctx), errReadyTimeout) {
		return fmt.Errorf("%w: project %s: no Ready pod after %s: %s", executor.ErrNotReady, project, f.e.cfg.ReadyTimeout, why)
	}
	return fmt.Errorf("project %s pod: %w", project, err)
}

// create creates project's pod from the template with the project's pod
// settings applied, and returns it as the API server created it; one
// created meanwhile by another worker is as good (nil pod, nil error).
func (f *podFinder) create(ctx context.Context, project string) (*corev1.Pod, error) {
	e := f.e
	settings, err := e.podSettings(ctx, project)
	if err != nil {
		return nil, err
	}
	pod := e.cfg.PodTemplate.DeepCopy()
	if err := applySettings(pod, e.cfg.Container, settings); err != nil {
		return nil, fmt.Errorf("%w: project %s: %w", executor.ErrNotReady, project, err)
	}
	pod.TypeMeta = metav1.TypeMeta{}
	pod.ObjectMeta = metav1.ObjectMeta{
		Name: PodName(project), Namespace: e.cfg.Namespace,
		Labels: map[string]string{}, Annotations: e.cfg.PodTemplate.Annotations,
	}
	for k, v := range e.cfg.PodTemplate.Labels {
		pod.Labels[k] = v
	}
	pod.Labels[LabelProject] = project
	pod.Labels["app.kubernetes.io/managed-by"] = "rdev"
	var created *corev1.Pod
	err = e.call(ctx, "create pod", func(ctx context.Context) (err error) {
		created, err = e.core.create(ctx, e.cfg.Namespace, pod)
		return err
	})
	if apierrors.IsAlreadyExists(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	e.cfg.Log.Info("project pod created", "project", project, "pod", pod.Name, "namespace", e.cfg.Namespace,
		"image", settings.Image, "cpu", settings.CPU, "memory", settings.Memory)
	return created, nil
}

// watchReady applies the watch's events to pods until one is Ready (it
// is returned), none can become Ready (verdict says why), the watch ends
// or ctx ends. why describes the best candidate so far.
func watchReady(ctx context.Context, w watch.Interface, pods map[string]*corev1.Pod, why string) (*corev1.Pod, string, string) {
	// A safety net: a watch that misses a change (one made between the
	// list and the watch on a server that cannot replay from the list's
	// resource version) would otherwise wait out the whole ready timeout.
	relist := time.NewTimer(relistEvery)
	defer relist.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, "", why
		case <-relist.C:
			return nil, "", why // the caller lists again
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, "", why
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod {
				if ev.Type == watch.Error {
					return nil, "", why
				}
				continue
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				pods[p.Name] = p
			case watch.Deleted:
				delete(pods, p.Name)
				if len(pods) == 0 {
					return nil, "", "pod deleted"
				}
			}
			pod, verdict := choose(pods)
			if pod != nil && podReady(pod) {
				return pod, "", why
			}
			if pod == nil && verdict != "" {
				return nil, verdict, why
			}
			if pod != nil {
				why = describe(pod)
			}
		}
	}
}

// relistEvery is how often a wait for Ready lists the pods again.
const relistEvery = 2 * time.Second

// choose picks the pod to run in: a Ready one (verdict ""), else the best
// candidate to wait for (verdict ""), else nil with a verdict saying why
// none can become Ready, or nil and "" when there is no pod at all or only
// terminating ones (wait for them to go).
func choose(pods map[string]*corev1.Pod) (*corev1.Pod, string) {
	var waitFor *corev1.Pod
	verdict := ""
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		if hopeless := broken(p); hopeless != "" {
			verdict = fmt.Sprintf("pod %s: %s", p.Name, hopeless)
			continue
		}
		if podReady(p) {
			return p, ""
		}
		waitFor = p
	}
	if waitFor != nil {
		return waitFor, ""
	}
	return nil, verdict
}

// podReady reports whether p is running with its Ready condition true.
func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// broken says why p cannot become Ready without someone's help: it ended,
// or a container is crash-looping or its image cannot be pulled.
func broken(p *corev1.Pod) string {
	switch p.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		return fmt.Sprintf("phase %s %s", p.Status.Phase, p.Status.Reason)
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError":
				return fmt.Sprintf("container %s: %s: %s", cs.Name, w.Reason, w.Message)
			}
		}
	}
	return ""
}

// describe says where a pod that is not Ready is.
func describe(p *corev1.Pod) string {
	s := fmt.Sprintf("pod %s is %s", p.Name, p.Status.Phase)
	if p.Status.Phase == "" {
		s = fmt.Sprintf("pod %s is not scheduled yet", p.Name)
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			s += fmt.Sprintf(", container %s %s", cs.Name, w.Reason)
		}
	}
	return s
}

// watchPod reports on lost, once, when pod is deleted or stops running,
// until ctx ends. It watches from the pod's resource version and watches
// again when the API ends a watch.
func (e *Executor) watchPod(ctx context.Context, pod *corev1.Pod, lost chan<- error) {
	rv := pod.ResourceVersion
	retry := time.NewTimer(0)
	defer retry.Stop()
	<-retry.C
	for ctx.Err() == nil {
		var w watch.Interface
		err := e.call(ctx, "watch pod", func(ctx context.Context) (err error) {
			w, err = e.core.watch(ctx, pod.Namespace, metav1.ListOptions{
				FieldSelector: fields.OneTermEqualSelector("metadata.name", pod.Name).String(), ResourceVersion: rv,
			})
			return err
		})
		if err == nil {
			if lerr := podGone(ctx, w, pod, &rv); lerr != nil {
				lost <- lerr
				return
			}
			w.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		// Before watching again, make sure nothing was missed.
		if lerr := e.checkLost(ctx, pod); lerr != nil {
			lost <- lerr
			return
		}
		retry.Reset(time.Second)
		select {
		case <-ctx.Done():
		case <-retry.C:
		}
	}
}

// podGone reads w until pod is deleted or stops (the error wraps
// executor.ErrLost), or the watch or ctx ends (nil).
func podGone(ctx context.Context, w watch.Interface, pod *corev1.Pod, rv *string) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod || p.UID != pod.UID && p.UID != "" && pod.UID != "" {
				continue
			}
			*rv = p.ResourceVersion
			if ev.Type == watch.Deleted {
				return fmt.Errorf("%w: pod %s was deleted while the command ran", executor.ErrLost, pod.Name)
			}
			if why := stopped(p); why != "" {
				return fmt.Errorf("%w: pod %s %s while the command ran", executor.ErrLost, pod.Name, why)
			}
		}
	}
}

// stopped says why a pod that ran a command no longer does.
func stopped(p *corev1.Pod) string {
	switch {
	case p.DeletionTimestamp != nil:
		return "is being deleted"
	case p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded:
		return "stopped (" + string(p.Status.Phase) + ")"
	}
	return ""
}

// checkLost asks the API whether pod is gone or stopped; it returns an
// error wrapping executor.ErrLost if so, nil otherwise (also when the API
// cannot tell).
func (e *Executor) checkLost(ctx context.Context, pod *corev1.Pod) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var p *corev1.Pod
	err := e.call(ctx, "get pod", func(ctx context.Context) (err error) {
		p, err = e.core.get(ctx, pod.Namespace, pod.Name)
		return err
	})
	switch {
	case apierrors.IsNotFound(err) || err == nil && p.UID != pod.UID:
		return fmt.Errorf("%w: pod %s was deleted while the command ran", executor.ErrLost, pod.Name)
	case err == nil && stopped(p) != "":
		return fmt.Errorf("%w: pod %s %s while the command ran", executor.ErrLost, pod.Name, stopped(p))
	}
	return nil
}
