package deploy

import (
	"context"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads docker-compose.yml as `docker compose` would, with
// the .env the quick start makes (rdev keygen), with the given profiles.
func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	p, err := composeWith(generatedEnv(t), profiles...)
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

func composeWith(envFile string, profiles ...string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions([]string{repoPath("docker-compose.yml")},
		cli.WithWorkingDirectory(repoRoot), cli.WithEnvFiles(envFile), cli.WithDotEnv,
		cli.WithName("rdev"), cli.WithProfiles(profiles))
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

var keygenEnv struct {
	once sync.Once
	path string
	err  error
}

// generatedEnv is a .env made as the quick start makes it: `rdev keygen >
// .env` with the binary the image holds. Made once per test binary.
func generatedEnv(t *testing.T) string {
	t.Helper()
	bin := rdevBinary(t)
	keygenEnv.once.Do(func() {
		var out []byte
		if out, keygenEnv.err = exec.Command(bin, "keygen").Output(); keygenEnv.err == nil {
			keygenEnv.path = filepath.Join(filepath.Dir(bin), ".env")
			keygenEnv.err = os.WriteFile(keygenEnv.path, out, 0o600)
		}
	})
	if keygenEnv.err != nil {
		t.Fatalf("rdev keygen > .env: %v", keygenEnv.err)
	}
	return keygenEnv.path
}

// .env.example holds no usable secret: copied as it is, compose refuses
// to start and says how to make them.
func TestComposeRefusesExampleSecrets(t *testing.T) {
	t.Parallel()
	_, err := composeWith(repoPath(".env.example"))
	if err == nil || !strings.Contains(err.Error(), "rdev keygen") {
		t.Fatalf("compose with .env.example: %v, want a refusal naming rdev keygen", err)
	}
	for _, l := range strings.Split(string(mustRead(t, repoPath(".env.example"))), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") && v != "" {
			t.Errorf(".env.example sets %s: an example secret is everyone's", k)
		}
	}
}

// rdevCommand is the rdev command a service runs ("" for other images).
func rdevCommand(s types.ServiceConfig) string {
	if !strings.HasPrefix(s.Image, "rdev") || len(s.Command) == 0 {
		return ""
	}
	return s.Command[0]
}

func env(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

// natsMinor is the minor version of the nats-server this repository
// embeds, as pkg/topology's go.mod requires it.
func natsMinor(t *testing.T) string {
	t.Helper()
	for _, line := range strings.Split(string(mustRead(t, repoPath("pkg", "topology", "go.mod"))), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "github.com/nats-io/nats-server/v2 v"); ok {
			parts := strings.SplitN(v, ".", 3)
			return parts[0] + "." + parts[1]
		}
	}
	t.Fatal("pkg/topology does not require nats-server")
	return ""
}

// docker-compose.yml: the services the issue asks for, wired to each
// other, with health checks, dependencies, volumes, and only environment
// variables the binary reads.
func TestCompose(t *testing.T) {
	t.Parallel()
	reads := envReadBy(t)
	p := loadCompose(t)
	want := []string{"api-1", "api-2", "nats-1", "nats-2", "nats-3", "notifier-1", "notifier-2", "provision", "redis", "streamer-1", "streamer-2",
		"worker-1", "worker-2"}
	if got := slices.Sorted(maps.Keys(p.Services)); !slices.Equal(got, want) {
		t.Fatalf("default services %v, want %v", got, want)
	}
	obs := loadCompose(t, "observability")
	for _, s := range []string{"jaeger", "prometheus", "grafana"} {
		if _, ok := obs.Services[s]; !ok {
			t.Errorf("the observability profile has no %s", s)
		}
	}
	checkObservability(t, obs)

	minor := natsMinor(t)
	var natsServices []string
	for name, s := range p.Services {
		if !strings.HasPrefix(name, "nats-") {
			continue
		}
		natsServices = append(natsServices, name)
		if img := strings.TrimPrefix(s.Image, "nats:"); !strings.HasPrefix(img, minor+".") {
			t.Errorf("%s runs %s, want the official nats image at the embedded server's %s", name, s.Image, minor)
		}
		if env(s)["NATS_SERVER_NAME"] != name {
			t.Errorf("%s: NATS_SERVER_NAME %q", name, env(s)["NATS_SERVER_NAME"])
		}
		if !hasVolumeAt(s, "/data") || s.HealthCheck == nil {
			t.Errorf("%s: want a volume at /data (JetStream file storage) and a health check", name)
		}
	}
	for name, s := range p.Services {
		cmd := rdevCommand(s)
		if cmd == "" {
			continue
		}
		e := env(s)
		checkEnv(t, "compose service "+name, cmd, slices.Collect(maps.Keys(e)), reads)
		if e["RDEV_REPLICAS"] != "3" {
			t.Errorf("%s: RDEV_REPLICAS %q, want 3", name, e["RDEV_REPLICAS"])
		}
		for _, n := range natsServices {
			if !strings.Contains(e["RDEV_NATS_URL"], "nats://"+n+":4222") {
				t.Errorf("%s: RDEV_NATS_URL %q lacks %s", name, e["RDEV_NATS_URL"], n)
			}
		}
		role := map[string]string{"provision": "admin"}[cmd]
		if role == "" {
			role = cmd
		}
		if e["RDEV_NATS_USER"] != role || e["RDEV_NATS_PASSWORD"] == "" {
			t.Errorf("%s signs in to NATS as %q, want %s with a password", name, e["RDEV_NATS_USER"], role)
		}
		// The API closes revoked direct subscribers' connections as the
		// system account's user.
		if sys := e["RDEV_NATS_SYSTEM_USER"] != "" && e["RDEV_NATS_SYSTEM_PASSWORD"] != ""; sys != (cmd == "api") {
			t.Errorf("%s: system user %q with a password: %v; want it on the API alone", name, e["RDEV_NATS_SYSTEM_USER"], sys)
		}
		if cmd == "provision" {
			for _, n := range natsServices {
				if s.DependsOn[n].Condition != types.ServiceConditionHealthy {
					t.Errorf("provision does not wait for %s to be healthy", n)
				}
			}
			continue
		}
		if s.DependsOn["provision"].Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s does not wait for provision to complete", name)
		}
		// What the API seals (project secrets, webhook signing secrets),
		// the workers and notifiers open: one key from .env for all.
		if key := e["RDEV_SECRETS_KEY"]; (key != "") != (cmd == "api" || cmd == "worker" || cmd == "notifier") ||
			(key != "" && key != env(p.Services["api-1"])["RDEV_SECRETS_KEY"]) {
			t.Errorf("%s: RDEV_SECRETS_KEY %q; want api-1's on every api, worker and notifier, none elsewhere", name, key)
		}
		if cmd == "api" {
			if s.DependsOn["redis"].Condition != types.ServiceConditionHealthy || e["RDEV_REDIS_URL"] != "redis://redis:6379/0" {
				t.Errorf("%s: Redis %q, dependency %+v", name, e["RDEV_REDIS_URL"], s.DependsOn["redis"])
			}
			if e["RDEV_BOOTSTRAP_API_KEY"] == "" {
				t.Errorf("%s: no bootstrap key from .env", name)
			}
		}
		checkProbe(t, name, s, e["RDEV_HTTP_ADDR"])
	}
}

// checkProbe: the health check is `rdev probe` on /readyz of the port the
// process listens on.
func checkProbe(t *testing.T, name string, s types.ServiceConfig, addr string) {
	t.Helper()
	if s.HealthCheck == nil || len(s.HealthCheck.Test) != 4 || s.HealthCheck.Test[0] != "CMD" || s.HealthCheck.Test[1] != "rdev" || s.HealthCheck.Test[2] != "probe" {
		t.Errorf("%s: health check %v, want CMD rdev probe URL", name, s.HealthCheck)
		return
	}
	u, err := url.Parse(s.HealthCheck.Test[3])
	_, port, _ := net.SplitHostPort(addr)
	if err != nil || u.Path != "/readyz" || u.Port() != port {
		t.Errorf("%s: probes %s, but listens on %s", name, s.HealthCheck.Test[3], addr)
	}
}

func hasVolumeAt(s types.ServiceConfig, target string) bool {
	return slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == target })
}

// checkObservability: Prometheus loads rdev's alerts, Grafana the
// dashboard, and both only in their profile.
func checkObservability(t *testing.T, p *types.Project) {
	t.Helper()
	mounts := map[string]string{}
	for _, name := range []string{"prometheus", "grafana"} {
		for _, c := range p.Services[name].Configs {
			mounts[c.Target] = p.Configs[c.Source].File
		}
		if !slices.Contains(p.Services[name].Profiles, "observability") {
			t.Errorf("%s is not in the observability profile", name)
		}
	}
	for target, file := range map[string]string{
		"/etc/prometheus/rdev-alerts.yaml":                "deploy/prometheus/rdev-alerts.yaml",
		"/var/lib/grafana/dashboards/rdev-dashboard.json": "deploy/grafana/rdev-dashboard.json",
		"/etc/grafana/provisioning/dashboards/rdev.yaml":  "deploy/compose/grafana/dashboards.yaml",
		"/etc/grafana/provisioning/datasources/rdev.yaml": "deploy/compose/grafana/datasources.yaml",
	} {
		if !strings.HasSuffix(mounts[target], file) {
			t.Errorf("%s is %q, want %s", target, mounts[target], file)
		}
	}
	// Prometheus scrapes every rdev process that serves /metrics.
	scrape := string(mustRead(t, repoPath("deploy", "compose", "prometheus.yml")))
	for name, s := range p.Services {
		if addr := env(s)["RDEV_HTTP_ADDR"]; rdevCommand(s) != "" && addr != "" {
			_, port, _ := net.SplitHostPort(addr)
			if !strings.Contains(scrape, `"`+name+":"+port+`"`) {
				t.Errorf("prometheus.yml does not scrape %s:%s", name, port)
			}
		}
	}
}
