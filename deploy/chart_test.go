package deploy

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	kubefake "helm.sh/helm/v4/pkg/kube/fake"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

var chartDir = repoPath("deploy", "helm", "rdev")

// clusterVersion is the Kubernetes of the renders: the oldest the chart
// supports (preStop sleep needs 1.30).
var clusterVersion = &common.KubeVersion{Version: "v1.30.0", Major: "1", Minor: "30"}

// installValues are what an install passes at the least: the secrets.
func installValues() map[string]any {
	return map[string]any{"secrets": map[string]any{
		"bootstrapAPIKey": "an-admin-key-of-at-least-32-characters",
		"natsPasswords":   map[string]any{"admin": "a", "api": "b", "worker": "c", "streamer": "d", "notifier": "e"},
	}}
}

// with returns installValues with path (dot separated) set to v.
func with(vals map[string]any, path string, v any) map[string]any {
	m := vals
	keys := strings.Split(path, ".")
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
	return vals
}

// scaledObject is the part of KEDA's ScaledObject the chart sets; strict
// decoding fails on any other field.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef  struct{ Name string } `json:"scaleTargetRef"`
		MinReplicaCount *int32                `json:"minReplicaCount"`
		MaxReplicaCount *int32                `json:"maxReplicaCount"`
		PollingInterval *int32                `json:"pollingInterval"`
		CooldownPeriod  *int32                `json:"cooldownPeriod"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              map[string]any `json:"spec"`
}

// manifests is one render, every object decoded into its type.
type manifests struct {
	deployments []*appsv1.Deployment
	jobs        []*batchv1.Job
	services    []*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     []*corev1.Secret
	accounts    []*corev1.ServiceAccount
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	roles       []*rbacv1.Role
	bindings    []*rbacv1.RoleBinding
	policies    []*networkingv1.NetworkPolicy
	ingresses   []*networkingv1.Ingress
	scaled      []*scaledObject
	monitors    []*serviceMonitor
	rules       []*prometheusRule
}

// render renders the chart as `helm install --dry-run=client` would
// (schema validation, hooks included), and decodes every manifest
// strictly: a misspelt or unknown field is an error.
func render(vals map[string]any) (*manifests, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	install := action.NewInstall(&action.Configuration{
		Releases:     storage.Init(driver.NewMemory()),
		KubeClient:   &kubefake.PrintingKubeClient{Out: io.Discard},
		Capabilities: common.DefaultCapabilities,
	})
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName, install.Namespace, install.Replace = "rdev", "rdev", true
	install.KubeVersion = clusterVersion
	rr, err := install.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	rel, ok := rr.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("release is a %T", rr)
	}
	docs := rel.Manifest
	for _, h := range rel.Hooks {
		docs += "\n---\n" + h.Manifest
	}
	m := &manifests{configMaps: map[string]*corev1.ConfigMap{}}
	for _, doc := range strings.Split(docs, "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "\n")) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return nil, err
		}
		if tm.Kind == "" {
			continue // a comment only
		}
		if err := m.add(tm.Kind, []byte(doc)); err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", tm.Kind, err, doc)
		}
	}
	return m, nil
}

func decode[T any](doc []byte, list *[]*T) error {
	v := new(T)
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		return err
	}
	*list = append(*list, v)
	return nil
}

func (m *manifests) add(kind string, doc []byte) error {
	switch kind {
	case "Deployment":
		return decode(doc, &m.deployments)
	case "Job":
		return decode(doc, &m.jobs)
	case "Service":
		return decode(doc, &m.services)
	case "ConfigMap":
		var cms []*corev1.ConfigMap
		if err := decode(doc, &cms); err != nil {
			return err
		}
		m.configMaps[cms[0].Name] = cms[0]
		return nil
	case "Secret":
		return decode(doc, &m.secrets)
	case "ServiceAccount":
		return decode(doc, &m.accounts)
	case "PodDisruptionBudget":
		return decode(doc, &m.pdbs)
	case "HorizontalPodAutoscaler":
		return decode(doc, &m.hpas)
	case "Role":
		return decode(doc, &m.roles)
	case "RoleBinding":
		return decode(doc, &m.bindings)
	case "NetworkPolicy":
		return decode(doc, &m.policies)
	case "Ingress":
		return decode(doc, &m.ingresses)
	case "ScaledObject":
		return decode(doc, &m.scaled)
	case "ServiceMonitor":
		return decode(doc, &m.monitors)
	case "PrometheusRule":
		return decode(doc, &m.rules)
	}
	return fmt.Errorf("kind %s is none the chart should render", kind)
}

func (m *manifests) component(c string) *appsv1.Deployment {
	for _, d := range m.deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == c {
			return d
		}
	}
	return nil
}

// The chart renders for its defaults and each feature switch, and every
// render holds what production needs.
func TestChart(t *testing.T) {
	t.Parallel()
	reads := envReadBy(t)
	cases := map[string]map[string]any{
		"defaults":             installValues(),
		"keda off":             with(installValues(), "worker.keda.enabled", false),
		"keda off, no hpa":     with(with(installValues(), "worker.keda.enabled", false), "worker.autoscaling.enabled", false),
		"external nats":        with(with(with(installValues(), "nats.url", "tls://nats.example.com:4222"), "secrets", map[string]any{"existingSecret": "rdev-secrets"}), "nats.replicas", 3),
		"ingress and monitors": with(with(with(installValues(), "ingress.enabled", true), "serviceMonitor.enabled", true), "prometheusRule.enabled", true),
		"network policies off": with(installValues(), "networkPolicy.enabled", false),
		"local executor":       with(with(installValues(), "worker.executor", "local"), "worker.image", map[string]any{"repository": "ghcr.io/rdev-dev/rdev-worker", "tag": "v1"}),
		"redis and seal key":   with(with(installValues(), "redis.url", "redis://redis.redis:6379/0"), "secrets.secretsKey", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
		"pod template":         with(installValues(), "worker.podTemplate", map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "main", "image": "debian:12"}}}}),
	}
	for name, vals := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, err := render(vals)
			if err != nil {
				t.Fatal(err)
			}
			checkChart(t, m, vals, reads)
		})
	}
}

func checkChart(t *testing.T, m *manifests, vals map[string]any, reads map[string][]string) {
	t.Helper()
	// The notifier opens webhook secrets with the secrets key: without
	// one there are no webhooks and no notifier.
	want := 3
	if lookup(vals, "secrets.secretsKey", "").(string) != "" {
		want = 4
	}
	if len(m.deployments) != want {
		t.Fatalf("%d Deployments, want api, streamer, worker (and the notifier with a secrets key)", len(m.deployments))
	}
	netpol := lookup(vals, "networkPolicy.enabled", true).(bool)
	executor := lookup(vals, "worker.executor", "kubernetes").(string)
	for _, d := range m.deployments {
		component := d.Spec.Template.Labels["app.kubernetes.io/component"]
		checkPod(t, "Deployment "+d.Name, d.Spec.Template.Spec)
		c := d.Spec.Template.Spec.Containers[0]
		command := c.Args[0]
		if command != component {
			t.Errorf("Deployment %s runs `rdev %s`", d.Name, command)
		}
		env := containerEnv(t, m, c)
		checkEnv(t, "Deployment "+d.Name, command, slices.Collect(maps.Keys(env)), reads)
		checkProbes(t, d.Name, c, env["RDEV_HTTP_ADDR"])
		grace := *d.Spec.Template.Spec.TerminationGracePeriodSeconds
		preStop := c.Lifecycle.PreStop.Sleep.Seconds
		if component == "worker" {
			drain := durationSeconds(t, env["RDEV_DRAIN_TIMEOUT"])
			if grace <= drain+preStop {
				t.Errorf("worker: terminationGracePeriodSeconds %d, not above preStop %d + drain timeout %d", grace, preStop, drain)
			}
		} else if grace <= 15+preStop {
			t.Errorf("%s: terminationGracePeriodSeconds %d, not above preStop %d + the 15 s shutdown timeout", component, grace, preStop)
		}
		if !covered(d, pdbSelectors(m.pdbs)) {
			t.Errorf("Deployment %s has no PodDisruptionBudget", d.Name)
		}
		if netpol && !covered(d, policySelectors(m.policies)) {
			t.Errorf("Deployment %s has no NetworkPolicy", d.Name)
		}
	}
	for _, j := range m.jobs {
		checkPod(t, "Job "+j.Name, j.Spec.Template.Spec)
		c := j.Spec.Template.Spec.Containers[0]
		checkEnv(t, "Job "+j.Name, c.Args[0], slices.Collect(maps.Keys(containerEnv(t, m, c))), reads)
		if j.Annotations["helm.sh/hook"] != "pre-install,pre-upgrade" {
			t.Errorf("Job %s runs at %q, want before install and upgrade", j.Name, j.Annotations["helm.sh/hook"])
		}
		checkHookInputs(t, m, j)
	}
	if len(m.jobs) != 1 || m.jobs[0].Spec.Template.Spec.Containers[0].Args[0] != "provision" {
		t.Error("no provision Job")
	}
	for _, p := range m.pdbs {
		// KEDA may scale the workers to one: a budget keeping one up
		// would make that pod unevictable and block node drains.
		if strings.HasSuffix(p.Name, "-worker") && (p.Spec.MaxUnavailable == nil || p.Spec.MinAvailable != nil) {
			t.Errorf("PodDisruptionBudget %s: minAvailable %v, maxUnavailable %v; want maxUnavailable only", p.Name, p.Spec.MinAvailable, p.Spec.MaxUnavailable)
		}
	}
	checkRBAC(t, m, executor)
	checkScaling(t, m, vals)
	if netpol {
		checkPolicies(t, m, executor)
	} else if len(m.policies) > 0 {
		t.Errorf("networkPolicy.enabled=false rendered %d NetworkPolicies", len(m.policies))
	}
	checkServices(t, m)
	if lookup(vals, "ingress.enabled", false).(bool) {
		checkIngress(t, m)
	}
	if lookup(vals, "prometheusRule.enabled", false).(bool) {
		checkRules(t, m)
	}
	if lookup(vals, "serviceMonitor.enabled", false).(bool) && len(m.monitors) != 1 {
		t.Error("serviceMonitor.enabled rendered no ServiceMonitor")
	}
}

// checkHookInputs checks that every Secret a hook Job reads and the
// chart renders exists when the Job runs: Helm runs pre-install hooks
// before it creates the release's resources, so such a Secret must be a
// hook of the same phases with a lower weight (a Secret the chart does
// not render, secrets.existingSecret, is the operator's).
func checkHookInputs(t *testing.T, m *manifests, j *batchv1.Job) {
	t.Helper()
	weight := func(a map[string]string) int {
		w, _ := strconv.Atoi(a["helm.sh/hook-weight"])
		return w
	}
	for _, c := range j.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				continue
			}
			for _, sec := range m.secrets {
				if sec.Name != e.ValueFrom.SecretKeyRef.Name {
					continue
				}
				if sec.Annotations["helm.sh/hook"] != j.Annotations["helm.sh/hook"] || weight(sec.Annotations) >= weight(j.Annotations) {
					t.Errorf("Job %s reads Secret %s (%s), which a first install creates after the Job runs: hook %q weight %d, the Job's %q weight %d",
						j.Name, sec.Name, e.Name, sec.Annotations["helm.sh/hook"], weight(sec.Annotations), j.Annotations["helm.sh/hook"], weight(j.Annotations))
				}
			}
		}
	}
}

// lookup reads a dot path of vals, def when it is not set.
func lookup(vals map[string]any, path string, def any) any {
	var v any = vals
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return def
		}
		if v, ok = m[k]; !ok {
			return def
		}
	}
	return v
}

// checkPod: non-root, seccomp RuntimeDefault, and every container with a
// read-only root, no capabilities, no escalation, requests and limits.
func checkPod(t *testing.T, what string, spec corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod security context %+v: want runAsNonRoot and seccomp RuntimeDefault", what, psc)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s/%s: no security context", what, c.Name)
			continue
		case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
			t.Errorf("%s/%s: not runAsNonRoot", what, c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s/%s: root filesystem not read-only", what, c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s/%s: privilege escalation allowed", what, c.Name)
		case sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s/%s: capabilities %+v, want all dropped", what, c.Name, sc.Capabilities)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				t.Errorf("%s/%s: no %s request", what, c.Name, r)
			}
			if _, ok := c.Resources.Limits[r]; !ok {
				t.Errorf("%s/%s: no %s limit", what, c.Name, r)
			}
		}
	}
}

// containerEnv is every variable a container gets: its ConfigMaps
// (envFrom) and its own env.
func containerEnv(t *testing.T, m *manifests, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			t.Errorf("container %s: envFrom other than a ConfigMap", c.Name)
			continue
		}
		cm := m.configMaps[from.ConfigMapRef.Name]
		if cm == nil {
			t.Errorf("container %s: ConfigMap %s is not rendered", c.Name, from.ConfigMapRef.Name)
			continue
		}
		maps.Copy(env, cm.Data)
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("container %s: %s from something other than a Secret", c.Name, e.Name)
		}
	}
	return env
}

// checkProbes: readiness on /readyz, liveness on /healthz, both on the
// port the process listens on (RDEV_HTTP_ADDR).
func checkProbes(t *testing.T, name string, c corev1.Container, addr string) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: RDEV_HTTP_ADDR %q: %v", name, addr, err)
		return
	}
	var http *corev1.ContainerPort
	for i, p := range c.Ports {
		if p.Name == "http" {
			http = &c.Ports[i]
		}
	}
	if http == nil || fmt.Sprint(http.ContainerPort) != port {
		t.Errorf("%s: port http %+v, but the process listens on %s", name, http, addr)
	}
	for probe, want := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || probe.HTTPGet.Port.String() != "http" {
			t.Errorf("%s: probe %+v, want GET %s on port http", name, probe, want)
		}
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds <= 0 {
		t.Errorf("%s: no preStop pause", name)
	}
}

func durationSeconds(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscanf(s, "%ds", &n); err != nil {
		t.Errorf("duration %q: %v", s, err)
	}
	return n
}

func pdbSelectors(pdbs []*policyv1.PodDisruptionBudget) []*metav1.LabelSelector {
	var out []*metav1.LabelSelector
	for _, p := range pdbs {
		out = append(out, p.Spec.Selector)
	}
	return out
}

func policySelectors(ps []*networkingv1.NetworkPolicy) []*metav1.LabelSelector {
	var out []*metav1.LabelSelector
	for _, p := range ps {
		if p.Namespace == "" || p.Namespace == "rdev" {
			out = append(out, &p.Spec.PodSelector)
		}
	}
	return out
}

// covered says whether a selector selects the Deployment's pods.
func covered(d *appsv1.Deployment, selectors []*metav1.LabelSelector) bool {
	for _, s := range selectors {
		sel, err := metav1.LabelSelectorAsSelector(s)
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			return true
		}
	}
	return false
}

// checkRBAC: with the kubernetes executor, exactly one Role in the
// workspace namespace granting pods get/list/watch/create and pods/exec
// create, bound to the worker's ServiceAccount; nothing cluster-wide
// (the chart has no ClusterRole kind at all: render rejects one).
func checkRBAC(t *testing.T, m *manifests, executor string) {
	t.Helper()
	worker := m.component("worker")
	if executor != "kubernetes" {
		if len(m.roles)+len(m.bindings) > 0 {
			t.Errorf("the %s executor got %d Roles and %d RoleBindings", executor, len(m.roles), len(m.bindings))
		}
		return
	}
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "create"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create"}},
	}
	if len(m.roles) != 1 || !reflect.DeepEqual(m.roles[0].Rules, want) {
		t.Fatalf("Roles %+v, want one with %+v", m.roles, want)
	}
	if len(m.bindings) != 1 {
		t.Fatalf("%d RoleBindings, want 1", len(m.bindings))
	}
	b := m.bindings[0]
	if b.RoleRef.Kind != "Role" || b.RoleRef.Name != m.roles[0].Name || b.Namespace != m.roles[0].Namespace ||
		len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != worker.Spec.Template.Spec.ServiceAccountName {
		t.Errorf("RoleBinding %+v does not bind Role %s to the worker's ServiceAccount %s", b, m.roles[0].Name, worker.Spec.Template.Spec.ServiceAccountName)
	}
	for _, d := range m.deployments {
		if d != worker && (d.Spec.Template.Spec.AutomountServiceAccountToken == nil || *d.Spec.Template.Spec.AutomountServiceAccountToken) {
			t.Errorf("Deployment %s mounts a service account token it does not need", d.Name)
		}
	}
}

// checkScaling: api and streamer have HPAs; the worker a ScaledObject
// with one nats-jetstream trigger per priority consumer of the jobs
// stream, or (KEDA off) an HPA or a fixed replica count.
func checkScaling(t *testing.T, m *manifests, vals map[string]any) {
	t.Helper()
	targets := map[string]bool{}
	for _, h := range m.hpas {
		targets[h.Spec.ScaleTargetRef.Name] = true
	}
	for _, c := range []string{"api", "streamer"} {
		if !targets[m.component(c).Name] {
			t.Errorf("no HPA for %s", c)
		}
	}
	worker := m.component("worker")
	if !lookup(vals, "worker.keda.enabled", true).(bool) {
		if len(m.scaled) > 0 {
			t.Error("worker.keda.enabled=false rendered a ScaledObject")
		}
		if lookup(vals, "worker.autoscaling.enabled", true).(bool) != targets[worker.Name] {
			t.Errorf("worker HPA %v, want it with worker.autoscaling.enabled", targets[worker.Name])
		}
		if !targets[worker.Name] && worker.Spec.Replicas == nil {
			t.Error("the worker has neither an autoscaler nor replicas")
		}
		return
	}
	if targets[worker.Name] || len(m.scaled) != 1 {
		t.Fatalf("worker: %d ScaledObjects and HPA %v, want one ScaledObject and no HPA", len(m.scaled), targets[worker.Name])
	}
	so := m.scaled[0]
	if so.APIVersion != "keda.sh/v1alpha1" || so.Spec.ScaleTargetRef.Name != worker.Name || worker.Spec.Replicas != nil {
		t.Errorf("ScaledObject %s/%s targets %s; worker replicas %v", so.APIVersion, so.Name, so.Spec.ScaleTargetRef.Name, worker.Spec.Replicas)
	}
	var consumers []string
	for _, tr := range so.Spec.Triggers {
		if tr.Type != "nats-jetstream" || tr.Metadata["stream"] != contracts.StreamJobs {
			t.Errorf("trigger %+v: want nats-jetstream on %s", tr, contracts.StreamJobs)
		}
		for _, k := range []string{"natsServerMonitoringEndpoint", "account", "lagThreshold", "activationLagThreshold"} {
			if tr.Metadata[k] == "" {
				t.Errorf("trigger %s: no %s", tr.Metadata["consumer"], k)
			}
		}
		consumers = append(consumers, tr.Metadata["consumer"])
	}
	var want []string
	for _, p := range contracts.Priorities() {
		want = append(want, contracts.ConsumerJobs(p))
	}
	if !reflect.DeepEqual(consumers, want) {
		t.Errorf("KEDA triggers on consumers %v, want %v", consumers, want)
	}
}

// checkPolicies: api and streamer admit the ingress controller's
// namespace; workers have no ingress but metrics and reach only NATS,
// Redis, the Kubernetes API and DNS; project pods get no ingress and,
// by default, no egress.
func checkPolicies(t *testing.T, m *manifests, executor string) {
	t.Helper()
	allowedPorts := map[string][]int32{
		"api":       {4222, 53, 6379},
		"streamer":  {4222, 53},
		"worker":    {4222, 53, 6379, 443},
		"notifier":  {4222, 53, 80, 443},
		"provision": {4222, 53},
	}
	seen := map[string]bool{}
	for _, p := range m.policies {
		component := p.Labels["app.kubernetes.io/component"]
		seen[component] = true
		if !slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			t.Errorf("NetworkPolicy %s: policy types %v, want Ingress and Egress", p.Name, p.Spec.PolicyTypes)
		}
		if component == "workspace" {
			if p.Namespace != "rdev" || len(p.Spec.Ingress) > 0 || len(p.Spec.Egress) > 0 {
				t.Errorf("workspace NetworkPolicy %+v: want no ingress and no egress by default", p.Spec)
			}
			continue
		}
		for _, e := range p.Spec.Egress {
			for _, port := range e.Ports {
				if !slices.Contains(allowedPorts[component], port.Port.IntVal) {
					t.Errorf("NetworkPolicy %s lets %s out to port %s", p.Name, component, port.Port.String())
				}
			}
			if len(e.To) == 0 || len(e.Ports) == 0 {
				t.Errorf("NetworkPolicy %s: an egress rule open to every peer or port", p.Name)
			}
		}
		fromIngressNS := false
		for _, in := range p.Spec.Ingress {
			for _, peer := range in.From {
				if peer.NamespaceSelector != nil && peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "ingress-nginx" {
					fromIngressNS = true
				}
			}
			if len(in.From) == 0 {
				t.Errorf("NetworkPolicy %s: an ingress rule open to every peer", p.Name)
			}
		}
		if want := component == "api" || component == "streamer"; fromIngressNS != want {
			t.Errorf("NetworkPolicy %s: reachable from the ingress controller %v, want %v", p.Name, fromIngressNS, want)
		}
	}
	for _, c := range []string{"api", "streamer", "worker", "provision"} {
		if !seen[c] {
			t.Errorf("no NetworkPolicy for %s", c)
		}
	}
	if executor == "kubernetes" && !seen["workspace"] {
		t.Error("no NetworkPolicy for the project pods")
	}
}

func checkServices(t *testing.T, m *manifests) {
	t.Helper()
	for _, s := range m.services {
		sel := labels.SelectorFromSet(s.Spec.Selector)
		n := 0
		for _, d := range m.deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("Service %s selects %d Deployments, want 1", s.Name, n)
		}
	}
}

// checkIngress: streams go to the streamer, the rest to the api, with
// the proxy settings SSE needs.
func checkIngress(t *testing.T, m *manifests) {
	t.Helper()
	if len(m.ingresses) != 1 {
		t.Fatalf("%d Ingresses, want 1", len(m.ingresses))
	}
	in := m.ingresses[0]
	if in.Annotations["nginx.ingress.kubernetes.io/proxy-buffering"] != "off" || in.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "" {
		t.Errorf("Ingress annotations %v: want proxy buffering off and a long read timeout", in.Annotations)
	}
	backend := map[string]string{}
	for _, p := range in.Spec.Rules[0].HTTP.Paths {
		backend[p.Path] = p.Backend.Service.Name
	}
	streamer := m.component("streamer").Name
	if backend["/v1/streams/"] != streamer || backend["/v1/batches/[^/]+/events"] != streamer ||
		backend["/v1/projects/[^/]+/events"] != streamer || backend["/"] != m.component("api").Name {
		t.Errorf("Ingress paths %v", backend)
	}
}

// checkRules: the PrometheusRule is deploy/prometheus/rdev-alerts.yaml.
func checkRules(t *testing.T, m *manifests) {
	t.Helper()
	var want map[string]any
	if err := yaml.Unmarshal(mustRead(t, repoPath("deploy", "prometheus", "rdev-alerts.yaml")), &want); err != nil {
		t.Fatal(err)
	}
	if len(m.rules) != 1 || !reflect.DeepEqual(m.rules[0].Spec, want) {
		t.Error("the PrometheusRule differs from deploy/prometheus/rdev-alerts.yaml")
	}
}

// The chart's copy of the alerts is the file in deploy/prometheus.
func TestChartAlertsCopy(t *testing.T) {
	t.Parallel()
	if !bytes.Equal(mustRead(t, filepath.Join(chartDir, "files", "rdev-alerts.yaml")), mustRead(t, repoPath("deploy", "prometheus", "rdev-alerts.yaml"))) {
		t.Error("deploy/helm/rdev/files/rdev-alerts.yaml differs from deploy/prometheus/rdev-alerts.yaml: copy it")
	}
}

// helm lint finds nothing above INFO, with the values of an install.
func TestChartLint(t *testing.T) {
	t.Parallel()
	lint := action.NewLint()
	lint.KubeVersion, lint.Namespace = clusterVersion, "rdev"
	res := lint.Run([]string{chartDir}, installValues())
	for _, msg := range res.Messages {
		if msg.Severity > support.InfoSev {
			t.Errorf("helm lint: %s", msg)
		}
	}
	for _, err := range res.Errors {
		t.Errorf("helm lint: %v", err)
	}
}

// values.schema.json rejects a misspelt key, a wrong type or value, and
// a missing secret fails the install with a message naming it.
func TestChartRejectsBadValues(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		vals map[string]any
		want string
	}{
		"misspelt key":       {with(installValues(), "api.replica", 3), "replica"},
		"wrong type":         {with(installValues(), "nats.replicas", "three"), "replicas"},
		"unknown executor":   {with(installValues(), "worker.executor", "docker"), "executor"},
		"short admin key":    {with(installValues(), "secrets.bootstrapAPIKey", "short"), "bootstrapAPIKey"},
		"setting not RDEV_*": {with(installValues(), "config", map[string]any{"LOG_LEVEL": "debug"}), "LOG_LEVEL"},
		"no secrets":         {map[string]any{}, "secrets.bootstrapAPIKey"},
		"top-level typo":     {with(installValues(), "networkPolicies", map[string]any{}), "networkPolicies"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := render(c.vals)
			if err == nil {
				t.Fatal("rendered")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %s", err, c.want)
			}
		})
	}
}
