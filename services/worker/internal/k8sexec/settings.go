package k8sexec

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
)

// ProjectPods is how the executor learns a project's pod settings (the
// project record's `pod` field). It is read when the executor creates a
// project's pod, and only then: a pod already there is used as it is,
// so changed settings take effect when the pod is next created (after
// someone deletes it, or it is lost). Implementations must be safe for
// concurrent use.
type ProjectPods interface {
	// PodSettings returns project's pod settings; the zero value, also
	// for a project that does not exist, means the template unchanged.
	// An error means the settings could not be read (the pod is not
	// created, and the job waits to be tried again).
	PodSettings(ctx context.Context, project string) (access.PodSettings, error)
}

// podSettings reads project's settings; the zero value without Projects.
func (e *Executor) podSettings(ctx context.Context, project string) (access.PodSettings, error) {
	if e.cfg.Projects == nil {
		return access.PodSettings{}, nil
	}
	s, err := e.cfg.Projects.PodSettings(ctx, project)
	if err != nil {
		return access.PodSettings{}, fmt.Errorf("%w: project %s pod settings: %w", executor.ErrUnavailable, project, err)
	}
	return s, nil
}

// applySettings puts s on pod's command container (container): Image
// replaces its image, CPU and Memory its limits. A request the template
// sets above a new limit is lowered to it, since Kubernetes refuses a
// request greater than its limit. The API validated s with Kubernetes'
// parsers (services/api/internal/k8spod); a value that still does not
// parse is an error, not silently dropped.
func applySettings(pod *corev1.Pod, container string, s access.PodSettings) error {
	if s == (access.PodSettings{}) {
		return nil
	}
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == container {
			c = &pod.Spec.Containers[i]
			break
		}
	}
	if c == nil {
		return fmt.Errorf("pod settings: the pod template has no container %q", container)
	}
	if s.Image != "" {
		c.Image = s.Image
	}
	for _, l := range []struct {
		name  corev1.ResourceName
		value string
	}{{corev1.ResourceCPU, s.CPU}, {corev1.ResourceMemory, s.Memory}} {
		if l.value == "" {
			continue
		}
		q, err := resource.ParseQuantity(l.value)
		if err != nil || q.Sign() <= 0 {
			return fmt.Errorf("pod settings: %s %q is not a positive quantity", l.name, l.value)
		}
		if c.Resources.Limits == nil {
			c.Resources.Limits = corev1.ResourceList{}
		}
		c.Resources.Limits[l.name] = q
		if r, ok := c.Resources.Requests[l.name]; ok && r.Cmp(q) > 0 {
			c.Resources.Requests[l.name] = q
		}
	}
	return nil
}
