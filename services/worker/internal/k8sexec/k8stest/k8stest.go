// Package k8stest is a fake Kubernetes API server for testing the
// Kubernetes executor. It is a fake because no cluster (and no container
// runtime) can run on the machines where the tests run; it serves the real
// protocols, driven by the real client-go clients:
//
//   - pods get/list/watch/create/delete from client-go's ObjectTracker;
//     the test plays the kubelet and marks pods Ready (or lets the server
//     do it on creation);
//   - pods/exec over SPDY with the kubelet's own exec server
//     (k8s.io/cri-streaming), and over WebSocket (v5.channel.k8s.io)
//     through the kube-apiserver's own stream translator
//     (k8s.io/apiserver), unless the server plays an old SPDY-only one.
//
// An exec runs its command as a local process, the "container" being this
// machine, with this process's environment and, over it, the literal
// variables (value, not valueFrom) of the container's env in the pod
// spec, as a container's processes get them. Like a real kubelet, the server leaves the process running when
// the exec client disconnects; deleting a pod kills every process its
// execs started (found by a marker in their environment, which children
// inherit).
package k8stest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	utilexec "k8s.io/utils/exec"
)

// Options configure a Server.
type Options struct {
	// SPDYOnly makes the server refuse WebSocket exec, as API servers
	// before Kubernetes 1.30 do, so clients fall back to SPDY.
	SPDYOnly bool
	// AutoReady marks a created pod Running and Ready at once.
	AutoReady bool
	// StallListsAfterCreate makes every list of pods after the first
	// create hang until its request ends, as an API server too loaded to
	// answer does.
	StallListsAfterCreate bool
}

// Server is the fake API server.
type Server struct {
	opts    Options
	srv     *httptest.Server
	tracker k8stesting.ObjectTracker
	codec   runtime.Codec
	marker  string

	down    atomic.Bool
	creates atomic.Int64
	execs   atomic.Int64
	ws      atomic.Int64
	rv      atomic.Int64

	mu       sync.Mutex
	execURLs []string
}

var podsGVR = corev1.SchemeGroupVersion.WithResource("pods")

var silenceKlog sync.Once

// New starts a fake API server, stopped (with every process its execs
// started) when the test ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	silenceKlog.Do(func() {
		klog.SetLogger(logr.Discard())
		utilruntime.ErrorHandlers = nil
	})
	s := &Server{
		opts:    opts,
		tracker: k8stesting.NewObjectTracker(scheme.Scheme, scheme.Codecs.UniversalDecoder()),
		codec:   scheme.Codecs.LegacyCodec(corev1.SchemeGroupVersion),
		marker:  fmt.Sprintf("RDEV_FAKE_KUBELET=%d-%d", os.Getpid(), time.Now().UnixNano()),
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
		s.killProcesses("")
	})
	return s
}

// Config is a client configuration for the server.
func (s *Server) Config() *rest.Config {
	return &rest.Config{Host: s.srv.URL, QPS: 1000, Burst: 1000}
}

// SetDown makes every API request fail with 500 (down) or work again.
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// Creates is the number of pod create requests served.
func (s *Server) Creates() int { return int(s.creates.Load()) }

// Execs is the number of execs run (by either transport).
func (s *Server) Execs() int { return int(s.execs.Load()) }

// WebSocketExecs is the number of execs that came over WebSocket.
func (s *Server) WebSocketExecs() int { return int(s.ws.Load()) }

// ExecURLs returns the request URI (path and query) of every exec
// request served so far, in order: the API's (either transport) and the
// kubelet's behind the WebSocket translator. An API server's audit log
// records these.
func (s *Server) ExecURLs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.execURLs)
}

// Pods lists the pods of namespace.
func (s *Server) Pods(t testing.TB, namespace string) []corev1.Pod {
	t.Helper()
	obj, err := s.tracker.List(podsGVR, corev1.SchemeGroupVersion.WithKind("Pod"), namespace)
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*corev1.PodList).Items
}

// AddPod stores pod as is (a pod made by someone else than the executor).
func (s *Server) AddPod(t testing.TB, pod *corev1.Pod) {
	t.Helper()
	s.stamp(pod)
	if err := s.tracker.Create(podsGVR, pod, pod.Namespace); err != nil {
		t.Fatal(err)
	}
}

// SetReady plays the kubelet: it marks the pod Running and Ready.
func (s *Server) SetReady(t testing.TB, namespace, name string) {
	t.Helper()
	s.update(t, namespace, name, markReady)
}

// UpdateStatus changes a pod's status with f, as the kubelet would.
func (s *Server) UpdateStatus(t testing.TB, namespace, name string, f func(*corev1.PodStatus)) {
	t.Helper()
	s.update(t, namespace, name, func(p *corev1.Pod) { f(&p.Status) })
}

func (s *Server) update(t testing.TB, namespace, name string, f func(*corev1.Pod)) {
	t.Helper()
	obj, err := s.tracker.Get(podsGVR, namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	pod := obj.(*corev1.Pod).DeepCopy()
	f(pod)
	s.stamp(pod)
	if err := s.tracker.Update(podsGVR, pod, namespace); err != nil {
		t.Fatal(err)
	}
}

// DeletePod deletes a pod at once and, like a kubelet, kills every
// process of its container.
func (s *Server) DeletePod(t testing.TB, namespace, name string) {
	t.Helper()
	obj, err := s.tracker.Get(podsGVR, namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.tracker.Delete(podsGVR, namespace, name); err != nil {
		t.Fatal(err)
	}
	s.killProcesses(string(obj.(*corev1.Pod).UID))
}

func markReady(p *corev1.Pod) {
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
}

// stamp gives pod a new resource version (and a UID if it has none).
func (s *Server) stamp(pod *corev1.Pod) {
	pod.ResourceVersion = strconv.FormatInt(s.rv.Add(1), 10)
	if pod.UID == "" {
		pod.UID = types.UID(fmt.Sprintf("uid-%s-%d", pod.Name, s.rv.Load()))
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/exec") || strings.HasPrefix(r.URL.Path, "/kubelet/exec/") {
		s.mu.Lock()
		s.execURLs = append(s.execURLs, r.RequestURI)
		s.mu.Unlock()
	}
	if strings.HasPrefix(r.URL.Path, "/kubelet/") {
		s.serveKubelet(w, r)
		return
	}
	if s.down.Load() {
		s.writeErr(w, apierrors.NewInternalError(errors.New("fake API server is down")))
		return
	}
	// /api/v1/namespaces/{ns}/pods[/{name}[/exec]]
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 5 || parts[0] != "api" || parts[1] != "v1" || parts[2] != "namespaces" || parts[4] != "pods" {
		s.writeErr(w, apierrors.NewNotFound(podsGVR.GroupResource(), r.URL.Path))
		return
	}
	ns := parts[3]
	switch {
	case len(parts) == 5 && r.Method == http.MethodGet && r.URL.Query().Get("watch") == "true":
		s.watch(w, r, ns)
	case len(parts) == 5 && r.Method == http.MethodGet:
		s.list(w, r, ns)
	case len(parts) == 5 && r.Method == http.MethodPost:
		s.create(w, r, ns)
	case len(parts) == 6 && r.Method == http.MethodGet:
		obj, err := s.tracker.Get(podsGVR, ns, parts[5])
		s.write(w, http.StatusOK, obj, err)
	case len(parts) == 6 && r.Method == http.MethodDelete:
		s.write(w, http.StatusOK, &metav1.Status{Status: metav1.StatusSuccess}, s.tracker.Delete(podsGVR, ns, parts[5]))
	case len(parts) == 7 && parts[6] == "exec":
		s.exec(w, r, ns, parts[5])
	default:
		s.writeErr(w, apierrors.NewMethodNotSupported(podsGVR.GroupResource(), r.Method))
	}
}

// selectors returns the request's label and field selectors as a filter.
func selectors(r *http.Request) (func(*corev1.Pod) bool, error) {
	ls, err := labels.Parse(r.URL.Query().Get("labelSelector"))
	if err != nil {
		return nil, err
	}
	fs, err := fields.ParseSelector(r.URL.Query().Get("fieldSelector"))
	if err != nil {
		return nil, err
	}
	return func(p *corev1.Pod) bool {
		return ls.Matches(labels.Set(p.Labels)) &&
			fs.Matches(fields.Set{"metadata.name": p.Name, "metadata.namespace": p.Namespace})
	}, nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, ns string) {
	if s.opts.StallListsAfterCreate && s.creates.Load() > 0 {
		<-r.Context().Done()
		return
	}
	match, err := selectors(r)
	if err != nil {
		s.writeErr(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	obj, err := s.tracker.List(podsGVR, corev1.SchemeGroupVersion.WithKind("Pod"), ns)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	all := obj.(*corev1.PodList)
	out := &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: strconv.FormatInt(s.rv.Load(), 10)}}
	for _, p := range all.Items {
		if match(&p) {
			out.Items = append(out.Items, p)
		}
	}
	s.write(w, http.StatusOK, out, nil)
}

// watch streams the tracker's events as JSON watch events. The tracker
// keeps no history, so its watch starts now; a watch of one pod by name
// from a resource version first gets what a real API server would replay
// of that pod since then: its deletion, or its current state when it
// changed. Without that, a pod deleted just before its watch began
// would never be reported.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, ns string) {
	match, err := selectors(r)
	if err != nil {
		s.writeErr(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	wi, err := s.tracker.Watch(podsGVR, ns)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	defer wi.Stop()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	flusher := w.(http.Flusher)
	flusher.Flush()
	enc := json.NewEncoder(w)
	if ev, ok := s.since(r, ns); ok {
		raw, err := runtime.Encode(s.codec, ev.Object)
		if err != nil || enc.Encode(metav1.WatchEvent{Type: string(ev.Type), Object: runtime.RawExtension{Raw: raw}}) != nil {
			return
		}
		flusher.Flush()
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod || !match(p) {
				continue
			}
			raw, err := runtime.Encode(s.codec, p)
			if err != nil {
				return
			}
			if enc.Encode(metav1.WatchEvent{Type: string(ev.Type), Object: runtime.RawExtension{Raw: raw}}) != nil {
				return
			}
			flusher.Flush()
			if ev.Type == watch.Error {
				return
			}
		}
	}
}

// since is the event a watch of one pod by name (fieldSelector
// metadata.name) from a resource version starts with: the pod deleted,
// or modified when its resource version is no longer the one asked
// for; ok is false when nothing changed or the watch is not of that kind.
func (s *Server) since(r *http.Request, ns string) (ev watch.Event, ok bool) {
	rv := r.URL.Query().Get("resourceVersion")
	fs, err := fields.ParseSelector(r.URL.Query().Get("fieldSelector"))
	if rv == "" || rv == "0" || err != nil {
		return ev, false
	}
	name, named := fs.RequiresExactMatch("metadata.name")
	if !named {
		return ev, false
	}
	obj, err := s.tracker.Get(podsGVR, ns, name)
	switch {
	case apierrors.IsNotFound(err):
		return watch.Event{Type: watch.Deleted, Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}}, true
	case err != nil:
		return ev, false
	}
	p := obj.(*corev1.Pod)
	if p.ResourceVersion == rv {
		return ev, false
	}
	return watch.Event{Type: watch.Modified, Object: p}, true
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, ns string) {
	s.creates.Add(1)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.writeErr(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
	if err != nil {
		s.writeErr(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		s.writeErr(w, apierrors.NewBadRequest(fmt.Sprintf("%T is not a pod", obj)))
		return
	}
	pod.Namespace = ns
	pod.CreationTimestamp = metav1.Now()
	pod.Status = corev1.PodStatus{Phase: corev1.PodPending}
	if s.opts.AutoReady {
		markReady(pod)
	}
	s.stamp(pod)
	err = s.tracker.Create(podsGVR, pod, ns)
	s.write(w, http.StatusCreated, pod, err)
}

func (s *Server) write(w http.ResponseWriter, code int, obj runtime.Object, err error) {
	if err != nil {
		s.writeErr(w, err)
		return
	}
	b, err := runtime.Encode(s.codec, obj)
	if err != nil {
		s.writeErr(w, apierrors.NewInternalError(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func (s *Server) writeErr(w http.ResponseWriter, err error) {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		status = apierrors.NewInternalError(err)
	}
	st := status.Status()
	st.Kind, st.APIVersion = "Status", "v1"
	b, _ := json.Marshal(st)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(st.Code))
	_, _ = w.Write(b)
}

// exec serves pods/exec: SPDY (POST) straight to the kubelet side,
// WebSocket (GET) through the API server's stream translator.
func (s *Server) exec(w http.ResponseWriter, r *http.Request, ns, name string) {
	obj, err := s.tracker.Get(podsGVR, ns, name)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	if pod := obj.(*corev1.Pod); pod.Status.Phase != corev1.PodRunning {
		s.writeErr(w, apierrors.NewBadRequest(fmt.Sprintf("pod %s is not running", name)))
		return
	}
	q := r.URL.Query()
	opts := proxy.Options{Stdin: q.Get("stdin") == "true", Stdout: q.Get("stdout") == "true",
		Stderr: q.Get("stderr") == "true", Tty: q.Get("tty") == "true"}
	// The kubelet's names of the options differ from the API's.
	kq := url.Values{"command": q["command"], "container": q["container"]}
	for flag, on := range map[string]bool{"input": opts.Stdin, "output": opts.Stdout, "error": opts.Stderr, "tty": opts.Tty} {
		if on {
			kq.Set(flag, "1")
		}
	}
	loc, _ := url.Parse(s.srv.URL + "/kubelet/exec/" + ns + "/" + name + "?" + kq.Encode())
	switch r.Method {
	case http.MethodGet:
		if s.opts.SPDYOnly {
			s.writeErr(w, apierrors.NewBadRequest("Upgrade request required"))
			return
		}
		s.ws.Add(1)
		proxy.NewStreamTranslatorHandler(loc, nil, 0, opts).ServeHTTP(w, r)
	case http.MethodPost:
		r.URL.RawQuery = kq.Encode()
		s.serveKubelet(w, r.WithContext(context.WithValue(r.Context(), podKey{}, pod{ns, name})))
	default:
		s.writeErr(w, apierrors.NewMethodNotSupported(podsGVR.GroupResource(), r.Method))
	}
}

type podKey struct{}

type pod struct{ ns, name string }

// serveKubelet is the kubelet's exec endpoint: SPDY, kubelet option names.
func (s *Server) serveKubelet(w http.ResponseWriter, r *http.Request) {
	p, ok := r.Context().Value(podKey{}).(pod)
	if !ok {
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // kubelet/exec/{ns}/{name}
		if len(parts) != 4 {
			http.NotFound(w, r)
			return
		}
		p = pod{parts[2], parts[3]}
	}
	obj, err := s.tracker.Get(podsGVR, p.ns, p.name)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	s.execs.Add(1)
	q := r.URL.Query()
	opts := &remotecommand.Options{Stdin: q.Get("input") == "1", Stdout: q.Get("output") == "1",
		Stderr: q.Get("error") == "1", TTY: q.Get("tty") == "1"}
	po := obj.(*corev1.Pod)
	remotecommand.ServeExec(w, r, &kubelet{s: s, uid: string(po.UID), env: containerEnv(po, q.Get("container"))}, p.name, "", q.Get("container"),
		q["command"], opts, 0, 30*time.Second, remotecommand.SupportedStreamingProtocols)
}

// containerEnv is the literal environment the pod spec gives container.
func containerEnv(pod *corev1.Pod, container string) []string {
	var env []string
	for _, c := range pod.Spec.Containers {
		if c.Name != container {
			continue
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				env = append(env, e.Name+"="+e.Value)
			}
		}
	}
	return env
}

// kubelet runs exec'd commands as local processes.
type kubelet struct {
	s   *Server
	uid string
	env []string // the container's, over this process's
}

// ExecInContainer runs cmd. It does not stop the process when the client
// goes away (ctx ends), as a real kubelet does not either.
func (k *kubelet) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errw io.WriteCloser,
	_ bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if len(cmd) == 0 {
		return errors.New("no command")
	}
	c := exec.CommandContext(context.WithoutCancel(ctx), cmd[0], cmd[1:]...)
	c.Env = append(append(os.Environ(), k.env...), k.s.marker+"-"+k.uid)
	if in != nil {
		c.Stdin = in
	}
	if out != nil {
		c.Stdout = out
	}
	if errw != nil {
		c.Stderr = errw
	}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Output of processes left behind is not awaited forever.
	c.WaitDelay = 10 * time.Second
	err := c.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return &utilexec.ExitErrorWrapper{ExitError: exitErr}
	}
	return err
}

// killProcesses SIGKILLs every process started by an exec in the pod with
// uid ("" for every pod), found by the marker in its environment.
func (s *Server) killProcesses(uid string) {
	prefix := s.marker + "-"
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if uid == "" && strings.HasPrefix(kv, prefix) || kv == prefix+uid {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
}
