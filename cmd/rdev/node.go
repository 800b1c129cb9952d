package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/rdev-dev/rdev/cmd/rdev/internal/httpserver"
	"github.com/rdev-dev/rdev/cmd/rdev/internal/natsconn"
	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/natskv"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/telemetry"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
	"github.com/rdev-dev/rdev/services/api"
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
	// workerHTTP serves /metrics, /healthz and /readyz for a worker alone.
	workerHTTP bool
	// secretsKeyFile holds the project secrets key ("": secrets disabled);
	// generateSecretsKey creates it when absent (rdev up).
	secretsKeyFile     string
	generateSecretsKey bool
}

// runNode starts the configured services, prints one "rdev ready" line with
// the addresses in use, and on ctx's end shuts down in order: readiness
// off, SSE clients told to reconnect, HTTP drained, the worker drained,
// NATS connections drained, the embedded server stopped.
func runNode(ctx context.Context, cfg nodeConfig, log *slog.Logger, stdout io.Writer) (err error) {
	var cleanup []func()
	defer func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()

	tel, err := telemetry.New(ctx, cfg.telemetry, processName(cfg))
	if err != nil {
		return err
	}
	cleanup = append(cleanup, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			log.Warn("telemetry shutdown", "err", err)
		}
	})
	tracing := func(service string) trace.TracerProvider {
		tp, terr := tel.TracerProvider(ctx, service)
		if terr != nil {
			log.Warn("tracing off: no span exporter", "service", service, "err", terr)
			return tracenoop.NewTracerProvider()
		}
		return tp
	}
	meter := tel.MeterProvider()
	breakers, err := telemetry.NewBreakers(meter)
	if err != nil {
		return err
	}
	reconnects, err := meter.Meter("github.com/rdev-dev/rdev/cmd/rdev").Int64Counter("rdev.nats.reconnects",
		metric.WithUnit("{reconnect}"), metric.WithDescription("NATS reconnections, by connection."))
	if err != nil {
		return err
	}

	url := cfg.natsURL
	var inProcess nats.Option
	// signIn is how a connection of one role authenticates.
	signIn := func(natsserver.Role) ([]nats.Option, error) { return cfg.natsAuth.Options() }
	if cfg.embedNATS != "" {
		// Nobody but rdev reads the JetStream files (other projects' output,
		// the token secret) or the credentials.
		if err := os.MkdirAll(cfg.storeDir, 0o700); err != nil {
			return err
		}
		if err := os.Chmod(cfg.storeDir, 0o700); err != nil {
			return err
		}
		creds, err := natsserver.EnsureCredentials(cfg.credsDir)
		if err != nil {
			return err
		}
		signIn = func(r natsserver.Role) ([]nats.Option, error) {
			o, err := nats.NkeyOptionFromSeed(creds.SeedFile(r))
			return []nats.Option{o}, err
		}
		srv, err := natsserver.Start(natsserver.Config{Addr: cfg.embedNATS, StoreDir: cfg.storeDir, Users: creds.Users()})
		if err != nil {
			return err
		}
		cleanup = append(cleanup, func() { srv.Shutdown(); srv.WaitForShutdown() })
		url = srv.ClientURL()
		inProcess = nats.InProcessServer(srv)
		log.Info("embedded NATS started", "url", url, "store", cfg.storeDir, "credentials", cfg.credsDir)
		// Other rdev processes sign in with these; the seeds are secrets.
		fmt.Fprintf(stdout, "rdev NATS credentials (for other rdev processes, e.g. rdev worker --nats-nkey %s): %s\n",
			creds.SeedFile(natsserver.RoleWorker), cfg.credsDir)
	} else {
		log.Info("NATS", "url", url, "auth", cfg.natsAuth)
	}
	connect := func(name string, role natsserver.Role, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
		auth, err := signIn(role)
		if err != nil {
			return nil, nil, fmt.Errorf("NATS credentials of %s: %w", name, err)
		}
		opts = append(auth, opts...)
		closed := make(chan struct{})
		opts = append([]nats.Option{nats.Name("rdev-" + name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
			nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil { // nil: our own close at shutdown
					log.Warn("NATS disconnected", "conn", name, "err", err)
				}
			}),
			nats.ReconnectHandler(func(*nats.Conn) {
				reconnects.Add(ctx, 1, metric.WithAttributes(attribute.String("connection", name)))
				log.Info("NATS reconnected", "conn", name)
			}),
		}, opts...)
		if inProcess != nil {
			opts = append(opts, inProcess)
		}
		reconnects.Add(ctx, 0, metric.WithAttributes(attribute.String("connection", name)))
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("connect %s to NATS at %s: %w", name, url, err)
		}
		cleanup = append(cleanup, func() {
			// Drain flushes pending publishes; bound it in case NATS is gone.
			if nc.Drain() == nil {
				select {
				case <-closed:
				case <-time.After(5 * time.Second):
				}
			}
			nc.Close()
		})
		js, err := jetstream.New(nc)
		return nc, js, err
	}

	// The control connection provisions: as admin on the embedded server;
	// a lone service signs in as itself and provisions only what is not
	// current (which needs an admin user, or a server without users).
	nc, js, err := connect("control", controlRole(cfg))
	if err != nil {
		return err
	}
	tcfg := topology.Config{OutputMaxAge: cfg.topology.OutputMaxAge, StateTTL: cfg.topology.StateTTL, Replicas: cfg.topology.Replicas}
	if err := provision(ctx, js, tcfg, cfg.embedNATS != "", log); err != nil {
		return err
	}
	state, err := js.KeyValue(ctx, contracts.BucketState)
	if err != nil {
		return err
	}
	accessKV, err := js.KeyValue(ctx, contracts.BucketAccess)
	if err != nil {
		return err
	}

	var hs *httpserver.Server
	if cfg.api != nil || cfg.streamer != nil || cfg.workerHTTP {
		if hs, err = httpserver.New(ctx, cfg.http.HTTPAddr, cfg.http.TrustedProxies, log); err != nil {
			return err
		}
		ht := httpserver.Telemetry{MeterProvider: meter, Metrics: tel.Handler(), Routes: map[string]trace.TracerProvider{}}
		switch {
		case cfg.api != nil:
			ht.TracerProvider = tracing(telemetry.ServiceAPI)
		case cfg.streamer != nil:
			ht.TracerProvider = tracing(telemetry.ServiceStreamer)
		default:
			ht.TracerProvider = tracing(telemetry.ServiceWorker)
		}
		if cfg.streamer != nil {
			ht.Routes["/v1/streams/"] = tracing(telemetry.ServiceStreamer)
		}
		hs.Instrument(ht)
		hs.AddReadyCheck("nats", func(context.Context) error {
			if !nc.IsConnected() {
				return errors.New("not connected")
			}
			return nil
		})
		hs.AddReadyCheck("streams", func(ctx context.Context) error {
			_, err := js.Stream(ctx, contracts.StreamJobs)
			return err
		})
	}
	var secretsKeyBytes []byte
	if cfg.api != nil || cfg.worker != nil {
		if secretsKeyBytes, err = secretsKey(cfg.secretsKeyFile, cfg.generateSecretsKey, log); err != nil {
			return err
		}
	}
	if cfg.api != nil {
		// No reconnect buffer: while NATS is away a submit fails at once (503)
		// instead of waiting out the publish timeout.
		_, ajs, err := connect("api", natsserver.RoleAPI, nats.ReconnectBufSize(-1))
		if err != nil {
			return err
		}
		// The buckets through the API's own connection, for the same reason.
		astate, err := ajs.KeyValue(ctx, contracts.BucketState)
		if err != nil {
			return err
		}
		aaccess, err := ajs.KeyValue(ctx, contracts.BucketAccess)
		if err != nil {
			return err
		}
		claudeArgv, err := cfg.api.claudeArgv()
		if err != nil {
			return err
		}
		a, err := api.New(ctx, api.Config{MaxBodyBytes: cfg.api.MaxBodyBytes, DefaultTimeout: cfg.api.DefaultTimeout,
			MaxTimeout: cfg.api.MaxTimeout, ClaudeCommand: claudeArgv, RedisURL: cfg.api.RedisURL, RedisTimeout: cfg.api.RedisTimeout,
			RateLimitFailClosed: cfg.api.RateLimitFailClosed, KeyRateLimit: cfg.api.KeyRateLimit, KeyRateWindow: cfg.api.KeyRateWindow,
			TokenTTL: cfg.api.StreamTokenTTL, ReinstallBootstrapKey: cfg.api.ReinstallBootstrap, SecretsKey: secretsKeyBytes, Telemetry: api.Telemetry{TracerProvider: tracing(telemetry.ServiceAPI), MeterProvider: meter,
				OnBreakerChange: func(dep, _, to string) { breakers.Set(dep, to) }},
		}, ajs, astate, aaccess, log.With("service", "api"))
		if err != nil {
			return err
		}
		cleanup = append(cleanup, a.Close)
		hs.AddReadyCheck("api", a.Ready)
		generated, err := a.Bootstrap(ctx, cfg.api.BootstrapKey)
		if err != nil {
			return err
		}
		if generated != "" {
			// Shown once: only its hash is stored.
			fmt.Fprintln(stdout, "rdev admin API key (shown once, store it now): "+generated)
		}
		apiCtx, stopAPI := context.WithCancel(context.WithoutCancel(ctx))
		cleanup = append(cleanup, stopAPI)
		if err := a.Run(apiCtx); err != nil {
			return err
		}
		a.Register(hs.Echo) //nolint:contextcheck // registers routes; handlers use their request's context
	}
	var st *streamer.Service
	if cfg.streamer != nil {
		_, sjs, err := connect("streamer", natsserver.RoleStreamer)
		if err != nil {
			return err
		}
		gate, err := streamGate(ctx, accessKV)
		if err != nil {
			return err
		}
		st, err = streamer.New(streamer.Config{ //nolint:contextcheck // the streamer owns its lifetime; Shutdown ends itHeartbeat: cfg.streamer.SSEHeartbeat, AllowOrigins: cfg.streamer.CORSOrigins,
			UnavailableAfter: cfg.streamer.UnavailableAfter,
			Telemetry:        streamer.Telemetry{TracerProvider: tracing(telemetry.ServiceStreamer), MeterProvider: meter}},
			sjs, state, gate, log.With("service", "streamer"))
		if err != nil {
			return err
		}
		st.Register(hs.Echo)
	}

	// A nil channel never fires: absent services do not end the node.
	var workerDone chan error
	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	if cfg.worker != nil {
		workerDone = make(chan error, 1)
		wnc, _, err := connect("worker", natsserver.RoleWorker, nats.ReconnectBufSize(-1))
		if err != nil {
			return err
		}
		jobEnv, err := cfg.worker.jobEnv(os.LookupEnv)
		if err != nil {
			return err
		}
		jobHome, err := cfg.worker.jobHome()
		if err != nil {
			return err
		}
		var jobUser *worker.JobUser
		if cfg.worker.Executor == worker.ExecutorLocal {
			if jobUser, err = cfg.worker.jobUser(os.Geteuid()); err != nil {
				return err
			}
		}
		if jobUser != nil {
			ws, moved, err := jobWorkspaces(cfg.workspaces)
			if err != nil {
				return fmt.Errorf("workspaces: %w", err)
			}
			if moved {
				log.Warn("the job user cannot reach the data directory (a directory above it is private); workspaces live elsewhere",
					"workspaces", ws, "job_user", cfg.worker.JobUser)
			}
			cfg.workspaces = ws
		}
		var k8sBreaker func(from, to string)
		if cfg.worker.Executor == worker.ExecutorKubernetes {
			k8sBreaker = breakers.Hook("kubernetes")
		}
		w, err := worker.New(worker.Config{
			ID: cfg.worker.WorkerID, Concurrency: cfg.worker.Concurrency, FairEvery: cfg.worker.FairEvery,
			AckWait: cfg.worker.AckWait, DrainTimeout: cfg.worker.DrainTimeout, KillGrace: cfg.worker.KillGrace,
			Workspaces: cfg.workspaces, Executor: cfg.worker.Executor, UnavailableDelay: cfg.worker.K8s.UnavailableDelay,
			RetryBase: cfg.worker.RetryBase, RetryCap: cfg.worker.RetryCap, SlotDelay: cfg.worker.SlotDelay,
			JobEnv: jobEnv, JobHome: jobHome, JobUser: jobUser, SecretsKey: secretsKeyBytes,
			Kubernetes: worker.KubernetesConfig{
				Kubeconfig: cfg.worker.K8s.Kubeconfig, Namespace: cfg.worker.K8s.Namespace,
				PodTemplate: cfg.worker.K8s.PodTemplate, CreatePods: cfg.worker.K8s.CreatePods,
				QPS: cfg.worker.K8s.KubeQPS, Burst: cfg.worker.K8s.KubeBurst, ReadyTimeout: cfg.worker.K8s.PodReadyTimeout,
				OnBreakerChange: k8sBreaker,
			},
			Telemetry: worker.Telemetry{TracerProvider: tracing(telemetry.ServiceWorker), MeterProvider: meter},
		}, wnc, state, log.With("service", "worker"))
		if err != nil {
			return err
		}
		if hs != nil {
			hs.AddReadyCheck("worker", w.Ready)
		}
		go func() { workerDone <- w.Run(workerCtx) }()
	}
	var httpDone chan error
	if hs != nil {
		httpDone = make(chan error, 1)
		go func() { httpDone <- hs.Serve() }()
	}
	ready := "rdev ready"
	if hs != nil {
		ready += " http=" + hs.Addr()
	}
	if cfg.embedNATS != "" {
		ready += " nats=" + url + " nats-creds=" + cfg.credsDir
	}
	fmt.Fprintln(stdout, ready)
	log.Info("ready", "http", cfg.http.HTTPAddr, "nats", url)

	var errs []error
	select {
	case <-ctx.Done():
	case err := <-httpDone:
		errs = append(errs, fmt.Errorf("http server stopped: %w", err))
		httpDone = nil
	case err := <-workerDone:
		errs = append(errs, fmt.Errorf("worker stopped: %w", err))
		workerDone = nil
	}
	log.Info("shutting down")
	stopWorker()
	if hs != nil {
		hs.Drain()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.http.ShutdownTimeout)
		if st != nil {
			errs = append(errs, st.Shutdown(sctx))
		}
		errs = append(errs, hs.Shutdown(sctx))
		cancel()
	}
	if workerDone != nil {
		errs = append(errs, <-workerDone)
	}
	log.Info("stopped")
	return errors.Join(errs...)
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
	if len(names) == 1 {
		return names[0]
	}
	return "rdev"
}

// streamGate admits stream readers by token or key, reading keys and
// projects straight from the access bucket (a stream is opened far less
// often than a job is submitted, so no cache).
func streamGate(ctx context.Context, accessKV jetstream.KeyValue) (*access.StreamGate, error) {
	store, err := natskv.Open(ctx, accessKV)
	if err != nil {
		return nil, err
	}
	secret, err := store.TokenSecret(ctx)
	if err != nil {
		return nil, err
	}
	return &access.StreamGate{Signer: access.NewSigner(secret), Keys: store, Projects: store}, nil
}
