package k8sexec

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// LabelProject is the label that marks a project's pod; its value is the
// project id.
const LabelProject = "rdev.dev/project"

// Config configures an Executor. The zero value of each field but
// Namespace selects its default.
type Config struct {
	// Namespace holds the projects' pods.
	Namespace string
	// PodTemplate is the pod created for a project that has none (when
	// CreatePods is set); nil selects DefaultPodTemplate. Its name is
	// replaced by PodName(project) and LabelProject is added to its labels.
	PodTemplate *corev1.Pod
	// CreatePods lets the executor create a project's pod when none exists;
	// otherwise such a job fails with executor.ErrNotReady.
	CreatePods bool
	// Projects supplies each project's pod settings, applied on top of
	// PodTemplate when the executor creates the project's pod; nil creates
	// every pod from the template as it is.
	Projects ProjectPods
	// Container is the container commands run in; default the pod's first.
	Container string
	// Workspace is the directory, inside the container, of the project's
	// workspace: commands start there (Spec.WorkDir is relative to it).
	// It must be writable: the executor keeps the process group ids of
	// running commands under Workspace/.rdev/run. Default /workspace.
	Workspace string
	// ReadyTimeout bounds the wait for a project's pod to become Ready;
	// default 2m.
	ReadyTimeout time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL when a command is
	// stopped; default 2s.
	KillGrace time.Duration
	// BreakerFailures is how many consecutive failed Kubernetes API calls
	// open the circuit breaker; default 5.
	BreakerFailures uint32
	// BreakerOpenFor is how long the breaker stays open before it lets one
	// call probe the API again; default 10s.
	BreakerOpenFor time.Duration
	// OnBreakerChange, when set, is called after the breaker changes state
	// ("closed", "open", "half-open"); tests and metrics use it.
	OnBreakerChange func(from, to string)
	// Log receives the executor's own events (breaker changes, pod
	// creation); default discards them.
	Log *slog.Logger
}

func (c *Config) setDefaults() {
	if c.PodTemplate == nil {
		c.PodTemplate = DefaultPodTemplate()
	}
	if c.Container == "" && len(c.PodTemplate.Spec.Containers) > 0 {
		c.Container = c.PodTemplate.Spec.Containers[0].Name
	}
	if c.Workspace == "" {
		c.Workspace = "/workspace"
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 2 * time.Minute
	}
	if c.KillGrace <= 0 {
		c.KillGrace = 2 * time.Second
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerOpenFor <= 0 {
		c.BreakerOpenFor = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Validate reports the first problem with c (after defaults).
func (c Config) Validate() error {
	if c.Namespace == "" {
		return errors.New("k8sexec: Namespace is required")
	}
	if len(c.PodTemplate.Spec.Containers) == 0 {
		return errors.New("k8sexec: the pod template has no container")
	}
	if !path.IsAbs(c.Workspace) {
		return fmt.Errorf("k8sexec: Workspace %q is not an absolute path", c.Workspace)
	}
	return nil
}

// PodName is the name of project's pod when the executor creates it.
func PodName(project string) string { return "rdev-" + project }

// DefaultPodTemplate is the pod created for a project when no template is
// configured: a small shell image (busybox has sh and setsid, which the
// executor needs) kept alive by a loop that exits at once on SIGTERM, run
// as a non-root user without privilege escalation or capabilities, on a
// read-only root filesystem, with the workspace and /tmp on emptyDir
// volumes.
func DefaultPodTemplate() *corev1.Pod {
	no, yes := false, true
	uid := int64(65532)
	grace := int64(5)
	return &corev1.Pod{
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			RestartPolicy:                 corev1.RestartPolicyAlways,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid, FSGroup: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:       "workspace",
				Image:      "busybox:1.37",
				Command:    []string{"sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"},
				WorkingDir: "/workspace",
				Env:        []corev1.EnvVar{{Name: "HOME", Value: "/workspace"}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi"),
					},
					Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
				},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "workspace", MountPath: "/workspace"},
					{Name: "tmp", MountPath: "/tmp"},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "workspace", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
}

// LoadPodTemplate reads a pod template: a YAML (or JSON) Pod manifest,
// for instance a file mounted from a ConfigMap. Unknown fields are errors,
// so a typo does not silently drop a setting.
func LoadPodTemplate(file string) (*corev1.Pod, error) {
	b, err := os.ReadFile(filepath.Clean(file))
	if err != nil {
		return nil, fmt.Errorf("k8sexec: pod template: %w", err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		return nil, fmt.Errorf("k8sexec: pod template %s: %w", file, err)
	}
	if pod.Kind != "" && pod.Kind != "Pod" {
		return nil, fmt.Errorf("k8sexec: pod template %s: kind %q, want Pod", file, pod.Kind)
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, fmt.Errorf("k8sexec: pod template %s: no container", file)
	}
	return &pod, nil
}

// ClientConfig is how to reach the Kubernetes API.
type ClientConfig struct {
	// Kubeconfig lists kubeconfig files (as KUBECONFIG does, separated by
	// the OS list separator); "" uses the in-cluster configuration.
	Kubeconfig string
	// QPS and Burst are client-side rate limits; defaults 20 and 40.
	QPS   float32
	Burst int
}

// RESTConfig returns the client configuration c describes and the
// namespace it names (the kubeconfig context's, or the service account's
// in a cluster; "" when neither says).
func RESTConfig(c ClientConfig) (*rest.Config, string, error) {
	var (
		rc *rest.Config
		ns string
	)
	if c.Kubeconfig != "" {
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{Precedence: filepath.SplitList(c.Kubeconfig)}, &clientcmd.ConfigOverrides{})
		var err error
		if rc, err = cc.ClientConfig(); err != nil {
			return nil, "", fmt.Errorf("k8sexec: kubeconfig %s: %w", c.Kubeconfig, err)
		}
		ns, _, _ = cc.Namespace()
	} else {
		var err error
		if rc, err = rest.InClusterConfig(); err != nil {
			return nil, "", fmt.Errorf("k8sexec: no kubeconfig given and not in a cluster: %w", err)
		}
		if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
			ns = strings.TrimSpace(string(b))
		}
	}
	rc.QPS, rc.Burst = c.QPS, c.Burst
	if rc.QPS <= 0 {
		rc.QPS = 20
	}
	if rc.Burst <= 0 {
		rc.Burst = 40
	}
	rc.UserAgent = "rdev-worker"
	return rc, ns, nil
}
