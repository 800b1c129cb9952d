package k8sexec

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// corePods is the core/v1 pods API, the only part of Kubernetes the
// executor calls: get, list, watch, create and the exec subresource.
//
// It is a REST client over a scheme that holds core/v1 alone, not
// client-go's clientset: kubernetes.NewForConfig, and even the typed
// core/v1 client, import k8s.io/client-go/kubernetes/scheme, which links
// every API group into the binary and registers them all at init. rdev
// is one binary for every service, so that made it 36 MiB larger and
// cost every rdev process (api, streamer, a worker on the local executor
// alike) about 17 MiB of resident memory, mostly the binary's pages its
// init touched, before it did anything (docs/performance.md, Baseline
// memory).
type corePods struct {
	rest   *rest.RESTClient
	params runtime.ParameterCodec
}

// newCorePods returns the pods API at rc (copied; rc is not changed).
func newCorePods(rc *rest.Config) (*corePods, error) {
	s := runtime.NewScheme()
	// As client-go's scheme does: the unversioned meta types (Status,
	// the option types as query parameters) and core/v1's own types.
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	if err := corev1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("core/v1 scheme: %w", err)
	}
	c := rest.CopyConfig(rc)
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.APIPath = "/api"
	c.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	client, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, err
	}
	return &corePods{rest: client, params: runtime.NewParameterCodec(s)}, nil
}

// get returns the pod ns/name.
func (c *corePods) get(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	err := c.rest.Get().Namespace(ns).Resource("pods").Name(name).
		VersionedParams(&metav1.GetOptions{}, c.params).Do(ctx).Into(pod)
	return pod, err
}

// list returns the pods in ns that opts select.
func (c *corePods) list(ctx context.Context, ns string, opts metav1.ListOptions) (*corev1.PodList, error) {
	list := &corev1.PodList{}
	err := c.rest.Get().Namespace(ns).Resource("pods").
		VersionedParams(&opts, c.params).Do(ctx).Into(list)
	return list, err
}

// watch watches the pods in ns that opts select.
func (c *corePods) watch(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.rest.Get().Namespace(ns).Resource("pods").
		VersionedParams(&opts, c.params).Watch(ctx)
}

// create creates pod in ns.
func (c *corePods) create(ctx context.Context, ns string, pod *corev1.Pod) (*corev1.Pod, error) {
	out := &corev1.Pod{}
	err := c.rest.Post().Namespace(ns).Resource("pods").
		VersionedParams(&metav1.CreateOptions{}, c.params).Body(pod).Do(ctx).Into(out)
	return out, err
}

// execRequest is the exec subresource request of pod with opts.
func (c *corePods) execRequest(pod *corev1.Pod, opts *corev1.PodExecOptions) *rest.Request {
	return c.rest.Post().Namespace(pod.Namespace).Resource("pods").Name(pod.Name).
		SubResource("exec").VersionedParams(opts, c.params)
}
