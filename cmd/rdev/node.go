package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/rdev-dev/rdev/cmd/rdev/internal/httpserver"
	"github.com/rdev-dev/rdev/cmd/rdev/internal/natsconn"
	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/natskv"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/lifecycle"
	"github.com/rdev-dev/rdev/pkg/telemetry"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
	"github.com/rdev-dev/rdev/services/api"
	"github.com/rdev-dev/rdev/services/api/ui"
	"github.com/rdev-dev/rdev/services/notifier"
	"github.com/rdev-dev/rdev/services/streamer"
	"github.com/rdev-dev/rdev/services/worker"
)

// nodeConfig says which services one process runs and where they connect.
// A nil service config leaves that service out.
type nodeConfig struct {
	embedNATS string // listen address of an embedded server; "" connects to natsURL
	storeDir  string
	// credsDir holds the embedded server's NATS credentials (one nkey seed
	// per role); other processes sign in with them.
	credsDir   string
	natsURL    string
	natsAuth   natsconn.Config
	workspaces string
	http       httpFlags
	topology   topologyFlags
	api        *apiFlags
	worker     *workerFlags
	streamer   *streamerFlags
	telemetry  telemetry.Config
	notifier   *notifierFlags
	// probeHTTP serves /metrics, /healthz and /readyz for a worker or a
	// notifier alone.
	probeHTTP bool
	// secrets give the project secrets key (none: secrets disabled);
	// generateSecretsKey creates its file when absent (rdev up).
	secrets            secretsFlags
	generateSecretsKey bool
	// forced ends at the second signal: shutdown stops waiting.
	forced context.Context
}

// deps are what a node builds once and its components share.
type deps struct {
	log      *slog.Logger
	tel      *telemetry.Telemetry
	nats     *natsconn.Dialer
	js       jetstream.JetStream // the control connection's
	state    jetstream.KeyValue
	accessKV jetstream.KeyValue
	breakers *telemetry.Breakers
}

// tracing is the tracer provider of one service's spans.
func (d deps) tracing(ctx context.Context, service string) trace.TracerProvider {
	tp, err := d.tel.TracerProvider(ctx, service)
	if err != nil {
		d.log.Warn("tracing off: no span exporter", "service", service, "err", err)
		return tracenoop.NewTracerProvider()
	}
	return tp
}

// runNode builds the dependencies, then runs the configured components:
// started in order (worker, api, HTTP server, streamer), one "rdev ready"
// line printed with the addresses in use, and at ctx's end shut down in
// reverse: SSE clients told to reconnect, HTTP drained, the worker
// drained; then the NATS connections drain and the embedded server stops.
// cfg.forced ending (a second signal) cuts the shutdown short.
func runNode(ctx context.Context, cfg nodeConfig, log *slog.Logger, stdout io.Writer) error {
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	d, ready, err := buildDeps(ctx, cfg, log, stdout, &closers)
	if err != nil {
		return err
	}
	g, hs, err := components(ctx, cfg, d, stdout)
	if err != nil {
		return err
	}
	if err := g.Start(ctx); err != nil {
		return err
	}
	if hs != nil {
		ready += " http=" + hs.Addr()
	}
	fmt.Fprintln(stdout, ready)
	log.Info("ready", "http", cfg.http.HTTPAddr, "nats", d.nats.URL)

	failed := g.Wait(ctx)
	log.Info("shutting down")
	if hs != nil {
		hs.Drain() // readiness off first: load balancers stop sending traffic
	}
	// The shutdown outlives ctx; only a forced stop cuts it short.
	sctx, force := context.WithCancelCause(context.WithoutCancel(ctx))
	defer context.AfterFunc(cfg.forced, func() { force(context.Cause(cfg.forced)) })() //nolint:contextcheck // the second signal's context, which ctx cannot carry
	err = errors.Join(failed, g.Shutdown(sctx))
	if sctx.Err() != nil {
		return fmt.Errorf("stopped before the shutdown finished: %w", context.Cause(sctx))
	}
	log.Info("stopped")
	return err
}

// buildDeps starts telemetry and the embedded NATS server (when
// configured), connects, and provisions the topology. What it starts is
// added to closers. ready is the start of the "rdev ready" line.
func buildDeps(ctx context.Context, cfg nodeConfig, log *slog.Logger, stdout io.Writer, closers *[]func()) (d deps, ready string, err error) {
	d.log = log
	if d.tel, err = telemetry.New(ctx, cfg.telemetry, processName(cfg)); err != nil {
		return d, "", err
	}
	*closers = append(*closers, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := d.tel.Shutdown(sctx); err != nil {
			log.Warn("telemetry shutdown", "err", err)
		}
	})
	meter := d.tel.MeterProvider()
	if d.breakers, err = telemetry.NewBreakers(meter); err != nil {
		return d, "", err
	}
	reconnects, err := meter.Meter("github.com/rdev-dev/rdev/cmd/rdev").Int64Counter("rdev.nats.reconnects",
		metric.WithUnit("{reconnect}"), metric.WithDescription("NATS reconnections, by connection."))
	if err != nil {
		return d, "", err
	}
	d.nats = &natsconn.Dialer{URL: cfg.natsURL, Reconnects: reconnects, Log: log,
		SignIn: func(r natsserver.Role) ([]nats.Option, error) {
			if r == natsserver.RoleSystem && cfg.api != nil {
				if sys, ok := cfg.api.systemAuth(cfg.natsAuth); ok {
					return sys.Options()
				}
			}
			return cfg.natsAuth.Options()
		}}
	ready = "rdev ready"
	if cfg.embedNATS != "" {
		stop, err := embedNATS(cfg, d.nats, log, stdout)
		if err != nil {
			return d, "", err
		}
		*closers = append(*closers, stop)
		ready += " nats=" + d.nats.URL + " nats-creds=" + cfg.credsDir
	} else {
		log.Info("NATS", "url", cfg.natsURL, "auth", cfg.natsAuth)
	}
	*closers = append(*closers, d.nats.Close)

	// The control connection provisions: as admin on the embedded server;
	// a lone service signs in as itself and provisions only what is not
	// current (which needs an admin user, or a server without users).
	nc, err := d.nats.Dial(ctx, "control", controlRole(cfg))
	if err != nil {
		return d, "", err
	}
	if d.js, err = jetstream.New(nc); err != nil {
		return d, "", err
	}
	tcfg := topology.Config{OutputMaxAge: cfg.topology.OutputMaxAge, StateTTL: cfg.topology.StateTTL, Replicas: cfg.topology.Replicas}
	if err := provision(ctx, d.js, tcfg, cfg.embedNATS != "", log); err != nil {
		return d, "", err
	}
	if d.state, err = d.js.KeyValue(ctx, contracts.BucketState); err != nil {
		return d, "", err
	}
	if d.accessKV, err = d.js.KeyValue(ctx, contracts.BucketAccess); err != nil {
		return d, "", err
	}
	return d, ready, nil
}

// embedNATS starts the embedded server, with credentials per role in
// cfg.credsDir, and points dialer at it; stop stops the server.
func embedNATS(cfg nodeConfig, dialer *natsconn.Dialer, log *slog.Logger, stdout io.Writer) (stop func(), err error) {
	// Nobody but rdev reads the JetStream files (other projects' output,
	// the token secret) or the credentials.
	if err := os.MkdirAll(cfg.storeDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(cfg.storeDir, 0o700); err != nil {
		return nil, err
	}
	creds, err := natsserver.EnsureCredentials(cfg.credsDir)
	if err != nil {
		return nil, err
	}
	srv, err := natsserver.Start(natsserver.Config{Addr: cfg.embedNATS, StoreDir: cfg.storeDir, Users: creds.Users(),
		CalloutIssuer: creds.CalloutIssuer})
	if err != nil {
		return nil, err
	}
	dialer.URL = srv.ClientURL()
	dialer.Extra = []nats.Option{nats.InProcessServer(natsserver.NewInProcess(srv))}
	dialer.SignIn = func(r natsserver.Role) ([]nats.Option, error) {
		o, err := nats.NkeyOptionFromSeed(creds.SeedFile(r))
		return []nats.Option{o}, err
	}
	log.Info("embedded NATS started", "url", dialer.URL, "store", cfg.storeDir, "credentials", cfg.credsDir)
	// Other rdev processes sign in with these; the seeds are secrets.
	fmt.Fprintf(stdout, "rdev NATS credentials (for other rdev processes, e.g. rdev worker --nats-nkey %s): %s\n",
		creds.SeedFile(natsserver.RoleWorker), cfg.credsDir)
	return func() { srv.Shutdown(); srv.WaitForShutdown() }, nil
}

// components builds the configured components in start order; hs is the
// HTTP server, if any.
func components(ctx context.Context, cfg nodeConfig, d deps, stdout io.Writer) (g *lifecycle.Group, hs *httpserver.Server, err error) {
	defer func() {
		if err != nil && hs != nil {
			_ = hs.Shutdown(ctx) // never served: closes the listener
		}
	}()
	g = lifecycle.NewGroup(d.log)
	var secretsKeyBytes []byte
	if cfg.api != nil || cfg.worker != nil || cfg.notifier != nil {
		if secretsKeyBytes, err = cfg.secrets.key(cfg.generateSecretsKey, d.log); err != nil {
			return nil, hs, err
		}
	}
	if cfg.api != nil || cfg.streamer != nil || cfg.probeHTTP {
		if hs, err = newHTTPServer(ctx, cfg, d); err != nil {
			return nil, hs, err
		}
	}
	// add appends c to g and makes /readyz depend on it.
	add := func(name string, c lifecycle.Component, shutdownTimeout time.Duration) {
		g.Add(name, c, shutdownTimeout)
		if hs != nil {
			hs.AddReadyCheck(name, c.Ready)
		}
	}
	if cfg.worker != nil {
		w, err := newWorker(ctx, cfg, d, secretsKeyBytes)
		if err != nil {
			return nil, hs, err
		}
		add("worker", w, 0)
	}
	if cfg.notifier != nil {
		n, err := newNotifier(ctx, cfg, d, secretsKeyBytes)
		if err != nil {
			return nil, hs, err
		}
		add("notifier", n, 0)
	}
	if hs == nil {
		return g, nil, nil
	}
	var store *natskv.Store
	var signer *access.Signer
	if cfg.api != nil || cfg.streamer != nil {
		if store, err = natskv.Open(ctx, d.accessKV); err != nil {
			return nil, hs, fmt.Errorf("access store: %w", err)
		}
		secret, err := store.TokenSecret(ctx)
		if err != nil {
			return nil, hs, err
		}
		signer = access.NewSigner(secret)
	}
	if cfg.api != nil {
		a, err := newAPI(ctx, cfg, d, store, signer, secretsKeyBytes, stdout)
		if err != nil {
			return nil, hs, err
		}
		a.Register(hs.Echo) //nolint:contextcheck // registers routes; handlers use their request's context
		ui.Register(hs.Echo, ui.Config{TraceURL: cfg.api.UITraceURL})
		add("api", a, 0)
		// Every API replica sweeps the cron schedules; stopped before the
		// API it submits through.
		add("scheduler", a.Scheduler(0), 0)
	}
	g.Add("http", hs, cfg.http.ShutdownTimeout)
	if cfg.streamer != nil {
		sjs, err := dialJS(ctx, d, "streamer", natsserver.RoleStreamer)
		if err != nil {
			return nil, hs, err
		}
		st, err := streamer.New(cfg.streamer.config(), streamer.Deps{JS: sjs, State: d.state,
			Gate: &access.StreamGate{Signer: signer, Keys: store, Projects: store}, Log: d.log.With("service", "streamer"),
			Telemetry: streamer.Telemetry{TracerProvider: d.tracing(ctx, telemetry.ServiceStreamer), MeterProvider: d.tel.MeterProvider()}})
		if err != nil {
			return nil, hs, err
		}
		st.Register(hs.Echo)
		// Stopped before the HTTP server, so open streams end (clients
		// told to reconnect) instead of holding it open.
		add("streamer", st, cfg.http.ShutdownTimeout)
	}
	return g, hs, nil
}

// newHTTPServer is the one HTTP server of the process: /readyz follows the
// NATS connection and the topology, and the components added to it.
func newHTTPServer(ctx context.Context, cfg nodeConfig, d deps) (*httpserver.Server, error) {
	hs, err := httpserver.New(ctx, cfg.http.HTTPAddr, cfg.http.TrustedProxies, d.log)
	if err != nil {
		return nil, err
	}
	ht := httpserver.Telemetry{MeterProvider: d.tel.MeterProvider(), Metrics: d.tel.Handler(), Routes: map[string]trace.TracerProvider{}}
	switch {
	case cfg.api != nil:
		ht.TracerProvider = d.tracing(ctx, telemetry.ServiceAPI)
	case cfg.streamer != nil:
		ht.TracerProvider = d.tracing(ctx, telemetry.ServiceStreamer)
	case cfg.worker == nil && cfg.notifier != nil:
		ht.TracerProvider = d.tracing(ctx, telemetry.ServiceNotifier)
	default:
		ht.TracerProvider = d.tracing(ctx, telemetry.ServiceWorker)
	}
	if cfg.streamer != nil {
		ht.Routes["/v1/streams/"] = d.tracing(ctx, telemetry.ServiceStreamer)
	}
	hs.Instrument(ht)
	nc := d.js.Conn()
	hs.AddReadyCheck("nats", func(context.Context) error {
		if !nc.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	hs.AddReadyCheck("streams", func(ctx context.Context) error {
		_, err := d.js.Stream(ctx, contracts.StreamJobs)
		return err
	})
	return hs, nil
}

func newAPI(ctx context.Context, cfg nodeConfig, d deps, store *natskv.Store, signer *access.Signer, secretsKey []byte, stdout io.Writer) (*api.Service, error) {
	// No reconnect buffer: while NATS is away a submit fails at once (503)
	// instead of waiting out the publish timeout.
	ajs, err := dialJS(ctx, d, "api", natsserver.RoleAPI, nats.ReconnectBufSize(-1))
	if err != nil {
		return nil, err
	}
	// The state bucket through the API's own connection, for the same reason.
	astate, err := ajs.KeyValue(ctx, contracts.BucketState)
	if err != nil {
		return nil, err
	}
	// What the API follows gets a connection apart from the submits'
	// (api.Deps.Follow); a batch progress read fails at once too.
	follow, err := dialJS(ctx, d, "api-follow", natsserver.RoleAPI, nats.ReconnectBufSize(-1))
	if err != nil {
		return nil, err
	}
	followState, err := follow.KeyValue(ctx, contracts.BucketState)
	if err != nil {
		return nil, err
	}
	var secrets, hooks, deliveries jetstream.KeyValue
	if secretsKey != nil {
		if secrets, err = ajs.KeyValue(ctx, contracts.BucketSecrets); err != nil {
			return nil, fmt.Errorf("secrets bucket: %w", err)
		}
		if hooks, err = ajs.KeyValue(ctx, contracts.BucketWebhooks); err != nil {
			return nil, fmt.Errorf("webhooks bucket: %w", err)
		}
		if deliveries, err = ajs.KeyValue(ctx, contracts.BucketWebhookDeliveries); err != nil {
			return nil, fmt.Errorf("webhook deliveries bucket: %w", err)
		}
	}
	acfg, err := cfg.api.config(secretsKey)
	if err != nil {
		return nil, err
	}
	acfg.MaxDelay = maxDelay(acfg.MaxDelay, cfg.topology.StateTTL, d.log)
	seedFile := cfg.api.NATSCalloutKeyFile
	if seedFile == "" && cfg.embedNATS != "" {
		seedFile = natsserver.Credentials{Dir: cfg.credsDir}.CalloutSeedFile()
	}
	switch {
	case seedFile != "":
		seed, err := os.ReadFile(seedFile)
		if err != nil {
			return nil, fmt.Errorf("NATS auth callout key: %w", err)
		}
		acfg.NATSCalloutSeed = seedLine(seed)
	case cfg.api.NATSCalloutKey != "":
		acfg.NATSCalloutSeed = []byte(strings.TrimSpace(cfg.api.NATSCalloutKey))
	}
	switch {
	case cfg.api.NATSCalloutXKeyFile != "":
		seed, err := os.ReadFile(cfg.api.NATSCalloutXKeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS auth callout xkey: %w", err)
		}
		acfg.NATSCalloutXKeySeed = seedLine(seed)
	case cfg.api.NATSCalloutXKey != "":
		acfg.NATSCalloutXKeySeed = []byte(strings.TrimSpace(cfg.api.NATSCalloutXKey))
	}
	// The system user closes revoked direct subscribers' connections;
	// only worth a connection when the API serves the callout.
	var system *nats.Conn
	if _, ok := cfg.api.systemAuth(cfg.natsAuth); len(acfg.NATSCalloutSeed) > 0 && (ok || cfg.embedNATS != "") {
		if system, err = d.nats.Dial(ctx, "api-system", natsserver.RoleSystem); err != nil {
			return nil, err
		}
	}
	return api.New(acfg, api.Deps{ //nolint:contextcheck // New only builds; Start takes the context
		JS: ajs, Follow: follow, FollowState: followState, NATSSystem: system, State: astate, Secrets: secrets, Webhooks: hooks, WebhookDeliveries: deliveries, Access: store, Signer: signer,
		Log: d.log.With("service", "api"),
		Telemetry: api.Telemetry{TracerProvider: d.tracing(ctx, telemetry.ServiceAPI), MeterProvider: d.tel.MeterProvider(),
			OnBreakerChange: func(dep, _, to string) { d.breakers.Set(dep, to) }},
		// Shown once: only its hash is stored.
		ShowKey: func(key string) { fmt.Fprintln(stdout, "rdev admin API key (shown once, store it now): "+key) },
	})
}

func newWorker(ctx context.Context, cfg nodeConfig, d deps, secretsKey []byte) (*worker.Worker, error) {
	wnc, err := d.nats.Dial(ctx, "worker", natsserver.RoleWorker, nats.ReconnectBufSize(-1))
	if err != nil {
		return nil, err
	}
	// High-priority jobs' pulls and claims queue behind no one else's
	// (worker.Deps.High).
	high, err := d.nats.Dial(ctx, "worker-high", natsserver.RoleWorker, nats.ReconnectBufSize(-1))
	if err != nil {
		return nil, err
	}
	// Project records only: the worker's NATS user may not read keys or
	// the token secret (natsserver.RoleWorker).
	projects, err := natskv.OpenProjects(ctx, d.accessKV)
	if err != nil {
		return nil, err
	}
	wcfg, err := cfg.worker.config(cfg.workspaces, secretsKey, d.log)
	if err != nil {
		return nil, err
	}
	if wcfg.Executor == worker.ExecutorKubernetes {
		wcfg.Kubernetes.OnBreakerChange = d.breakers.Hook("kubernetes")
	}
	return worker.New(wcfg, worker.Deps{Conn: wnc, High: high, State: d.state, Projects: projects, Log: d.log.With("service", "worker"),
		Telemetry: worker.Telemetry{TracerProvider: d.tracing(ctx, telemetry.ServiceWorker), MeterProvider: d.tel.MeterProvider()}})
}

func newNotifier(ctx context.Context, cfg nodeConfig, d deps, secretsKey []byte) (*notifier.Service, error) {
	if secretsKey == nil {
		return nil, errors.New("the notifier needs the secrets key (--secrets-key-file or --secrets-key): it opens the webhooks' signing secrets")
	}
	njs, err := dialJS(ctx, d, "notifier", natsserver.RoleNotifier)
	if err != nil {
		return nil, err
	}
	kvs := make([]jetstream.KeyValue, 3)
	for i, name := range []string{contracts.BucketState, contracts.BucketWebhooks, contracts.BucketWebhookDeliveries} {
		if kvs[i], err = njs.KeyValue(ctx, name); err != nil {
			return nil, fmt.Errorf("bucket %s: %w", name, err)
		}
	}
	ncfg, err := cfg.notifier.config()
	if err != nil {
		return nil, err
	}
	return notifier.New(ncfg, notifier.Deps{JS: njs, State: kvs[0], Webhooks: kvs[1], WebhookDeliveries: kvs[2], SecretsKey: secretsKey,
		Log:       d.log.With("service", "notifier"),
		Telemetry: notifier.Telemetry{TracerProvider: d.tracing(ctx, telemetry.ServiceNotifier), MeterProvider: d.tel.MeterProvider()}})
}

// dialJS connects a service's own connection.
func dialJS(ctx context.Context, d deps, name string, role natsserver.Role, opts ...nats.Option) (jetstream.JetStream, error) {
	nc, err := d.nats.Dial(ctx, name, role, opts...)
	if err != nil {
		return nil, err
	}
	return jetstream.New(nc)
}

// controlRole is the user of the connection that provisions and serves
// shared reads: admin on the embedded server, else the one service run.
func controlRole(cfg nodeConfig) natsserver.Role {
	switch {
	case cfg.embedNATS != "":
		return natsserver.RoleAdmin
	case cfg.api != nil:
		return natsserver.RoleAPI
	case cfg.worker != nil:
		return natsserver.RoleWorker
	case cfg.notifier != nil:
		return natsserver.RoleNotifier
	default:
		return natsserver.RoleStreamer
	}
}

// processName is the service.name of the process's metrics: the one
// service it runs, or "rdev" for several.
func processName(cfg nodeConfig) string {
	var names []string
	if cfg.api != nil {
		names = append(names, telemetry.ServiceAPI)
	}
	if cfg.worker != nil {
		names = append(names, telemetry.ServiceWorker)
	}
	if cfg.streamer != nil {
		names = append(names, telemetry.ServiceStreamer)
	}
	if cfg.notifier != nil {
		names = append(names, telemetry.ServiceNotifier)
	}
	if len(names) == 1 {
		return names[0]
	}
	return "rdev"
}

// seedLine is the seed in the contents of an nkey file: its first line,
// as `nk -gen account -pubout` writes the seed and then the public key.
func seedLine(b []byte) []byte {
	line, _, _ := bytes.Cut(bytes.TrimSpace(b), []byte("\n"))
	return bytes.TrimSpace(line)
}
