// Package api is rdev's job submission service: it validates commands and
// prompts and queues them durably on the prioritized JetStream queue
// before answering 202. cmd/rdev wires it into an HTTP server.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/natskv"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/seal"
	"github.com/rdev-dev/rdev/pkg/state/webhookstore"
	"github.com/rdev-dev/rdev/services/api/internal/admin"
	"github.com/rdev-dev/rdev/services/api/internal/cache"
	"github.com/rdev-dev/rdev/services/api/internal/cachedstore"
	"github.com/rdev-dev/rdev/services/api/internal/httpapi"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
	"github.com/rdev-dev/rdev/services/api/internal/k8spod"
	"github.com/rdev-dev/rdev/services/api/internal/natsauth"
	"github.com/rdev-dev/rdev/services/api/internal/natsjs"
	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
	"github.com/rdev-dev/rdev/services/api/internal/redisstore"
	"github.com/rdev-dev/rdev/services/api/internal/schedules"
	"github.com/rdev-dev/rdev/services/api/internal/webhooks"
)

// Defaults of Config: what a zero field means, and the defaults of
// rdev's flags.
const (
	DefaultMaxBodyBytes  = 1 << 20
	DefaultMaxBatchBytes = 32 << 20
	DefaultJobTimeout    = 10 * time.Minute
	DefaultMaxJobTimeout = 24 * time.Hour
	// DefaultMaxJobDelay is how far ahead run_at may be by default.
	DefaultMaxJobDelay    = jobs.DefaultMaxDelay
	DefaultPublishTimeout = 5 * time.Second
	DefaultRedisTimeout   = 100 * time.Millisecond
	DefaultKeyRateWindow  = time.Minute
	DefaultTokenTTL       = time.Hour
	// DefaultNATSCredentialTTL is Config.NATSCredentialTTL's default.
	DefaultNATSCredentialTTL = 15 * time.Minute
	DefaultCacheTTL          = 5 * time.Minute
	// DefaultWebhookSecretOverlap is how long a rotated-out webhook
	// secret keeps signing.
	DefaultWebhookSecretOverlap = webhooks.DefaultRotationOverlap
)

// Config tunes the API. Zero values take the defaults above.
type Config struct {
	// MaxBodyBytes bounds a request body; default 1 MiB.
	MaxBodyBytes int64
	// MaxBatchBytes bounds a batch body; default 32 MiB.
	MaxBatchBytes int64
	// DefaultTimeout applies to jobs that set none; default 10m.
	DefaultTimeout time.Duration
	// MaxTimeout is the longest timeout a job may ask for; default 24h.
	MaxTimeout time.Duration
	// MaxDelay is how far ahead a job's run_at may be; default
	// DefaultMaxJobDelay. It must not exceed the state TTL or the jobs
	// stream's max age, or a scheduled job would be lost before it runs.
	MaxDelay time.Duration
	// ClaudeCommand is the argv for prompts, with "{prompt}" where the
	// job's options, "--" and the prompt go; default claude -p --verbose
	// {prompt}.
	ClaudeCommand []string
	// PublishTimeout bounds the wait for JetStream to store a job or an
	// audit record; default 5s.
	PublishTimeout time.Duration
	// RedisURL, when set, keeps rate-limit counters and the key and
	// project lookup cache in Redis, shared by every API replica;
	// otherwise they are in process.
	RedisURL string
	// RedisTimeout bounds each Redis call; a slower answer counts as a
	// failure (see RateLimitFailClosed). Default 100ms.
	RedisTimeout time.Duration
	// RateLimitFailClosed refuses requests (503) while the rate limiter's
	// backend is down; by default they are let through with a warning.
	RateLimitFailClosed bool
	// KeyRateLimit is how many requests a key without its own limit may
	// make in KeyRateWindow; 0 is unlimited.
	KeyRateLimit  int
	KeyRateWindow time.Duration
	// TokenTTL is how long the stream token in events_url stays valid;
	// default 1h.
	TokenTTL time.Duration
	// CacheTTL bounds a cached key or project; default 5m (changes drop
	// entries at once anyway).
	CacheTTL time.Duration
	// SecretsKey is the 32-byte key project secrets are sealed with (see
	// package seal); without one the secrets endpoints, and jobs that
	// reference a secret, are refused with 409 secrets_disabled.
	SecretsKey []byte
	// WebhookSecretOverlap is how long a rotated-out webhook signing
	// secret keeps signing beside the new one. Default 24h.
	WebhookSecretOverlap time.Duration
	// ReinstallBootstrapKey puts the configured bootstrap key back even
	// when an admin revoked it (rdev up --reinstall-bootstrap-key); by
	// default a revoked bootstrap key stays revoked across restarts.
	ReinstallBootstrapKey bool
	// BootstrapKey is the admin key Start installs (see Bootstrap); ""
	// generates one on the first start. A secret: never logged.
	BootstrapKey string
	// NATSCalloutSeed is the seed of the account nkey (S A…) whose public
	// key is the NATS server's auth_callout issuer. With it the API
	// serves the server's auth callout and mints NATS credentials (POST
	// /v1/projects/{p}/nats-credentials); without it that endpoint
	// answers 409 nats_credentials_disabled. A secret: never logged.
	NATSCalloutSeed []byte
	// NATSCalloutAccount is the account direct subscribers are placed
	// in: with a server's authorization block, the auth_callout account's
	// name ("" is "$G", the global account); in operator mode, the public
	// key (A…) of rdev's account, whose JWT configures the callout and of
	// which NATSCalloutSeed is the key or a signing key.
	NATSCalloutAccount string
	// NATSCalloutXKeySeed is the seed of the curve key (SX…) whose public
	// key is the callout's xkey (auth_callout's xkey, or the account
	// JWT's): the server encrypts requests to it and the API encrypts its
	// answers. Empty: the callout has no xkey. A secret: never logged.
	NATSCalloutXKeySeed []byte
	// NATSCredentialTTL is how long a NATS credential is admitted, and
	// bounds how long a connection made with it lasts (the server closes
	// it when the credential's user JWT expires). Default 15m.
	NATSCredentialTTL time.Duration
	// NATSSweepEvery is how often, with Deps.NATSSystem, every open
	// direct subscriber is checked when nothing changed (it catches keys
	// that simply expired); changes to keys and projects are checked at
	// once. Default natsauth.DefaultSweepEvery.
	NATSSweepEvery time.Duration
}

func (c *Config) setDefaults() {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = DefaultJobTimeout
	}
	if c.MaxTimeout <= 0 {
		c.MaxTimeout = DefaultMaxJobTimeout
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.RedisTimeout <= 0 {
		c.RedisTimeout = DefaultRedisTimeout
	}
	if c.KeyRateWindow <= 0 {
		c.KeyRateWindow = DefaultKeyRateWindow
	}
	if c.NATSCredentialTTL <= 0 {
		c.NATSCredentialTTL = DefaultNATSCredentialTTL
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = DefaultTokenTTL
	}
	if c.CacheTTL <= 0 {
		c.CacheTTL = DefaultCacheTTL
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.MaxTimeout > 0 && c.DefaultTimeout > c.MaxTimeout {
		return fmt.Errorf("api: default timeout %s exceeds max timeout %s", c.DefaultTimeout, c.MaxTimeout)
	}
	if len(c.ClaudeCommand) > 0 {
		found := false
		for _, a := range c.ClaudeCommand {
			found = found || a == jobs.PromptPlaceholder
		}
		if !found {
			return errors.New("api: the claude command needs a " + jobs.PromptPlaceholder + " element")
		}
	}
	return nil
}

// Deps are what the process builds once and the API uses.
type Deps struct {
	// JS is the API's own JetStream context, on a connection made with
	// nats.ReconnectBufSize(-1): while NATS is away a submit fails at
	// once (503) instead of waiting out the publish timeout. The topology
	// must be provisioned (pkg/topology).
	JS jetstream.JetStream
	// State is the contracts.BucketState bucket, through JS.
	State jetstream.KeyValue
	// Follow and FollowState, when set, are JS and State on a connection
	// of their own, for what the API follows rather than serves: the job
	// index, the finished-job audit copies and batch progress. Their
	// steady inbound traffic then does not queue ahead of a submit's
	// writes on JS's connection; that queue held a high-priority submit's
	// writes up to 9 ms while a backlog drained (performance.md). Nil
	// follows on JS.
	Follow      jetstream.JetStream
	FollowState jetstream.KeyValue
	// Secrets is the contracts.BucketSecrets bucket; required with
	// Config.SecretsKey.
	Secrets jetstream.KeyValue
	// Webhooks and WebhookDeliveries are the webhook buckets
	// (contracts.BucketWebhooks, BucketWebhookDeliveries); with
	// Config.SecretsKey they enable the webhook endpoints (their secrets
	// are sealed with it).
	Webhooks          jetstream.KeyValue
	WebhookDeliveries jetstream.KeyValue
	// Access is the access store (projects, keys); Signer signs stream
	// tokens with its token secret.
	Access *natskv.Store
	Signer *access.Signer
	Log    *slog.Logger
	// Telemetry says where spans and metrics go; default nowhere.
	Telemetry Telemetry
	// ShowKey is given the admin key the first Start generates, to be
	// shown once (only its hash is stored); nil discards it.
	ShowKey func(key string)
	// Clock is the scheduler's time (time.Now when nil; tests move it).
	Clock func() time.Time
	// NATSSystem is a connection of the system account's user
	// (natsserver.RoleSystem). With it and Config.NATSCalloutSeed the API
	// closes a direct subscriber's open connections within seconds of its
	// key's revocation or its project's deletion (natsauth.Sweeper);
	// without it they stay open until their credential expires.
	NATSSystem *nats.Conn
}

// Service is the API: register its routes on an Echo instance, then
// Start it.
type Service struct {
	handlers *httpapi.Handlers
	admin    *admin.Service
	store    *natskv.Store
	cached   *cachedstore.Store
	audit    *natsjs.AuditLog
	finished *natsjs.AuditLog // copies terminal events, on the follow connection
	index    *natsjs.JobIndex
	closers  []func()
	conn     *connWatch
	nc       *nats.Conn
	log      *slog.Logger
	metrics  *metrics
	// schedules fires cron schedules (see Scheduler).
	schedules *schedules.Service
	// callout answers the NATS server's auth callout; nil without
	// Config.NATSCalloutSeed.
	callout *natsauth.Callout
	// sweeper closes revoked direct subscribers' connections; nil without
	// the callout or Deps.NATSSystem.
	sweeper       *natsauth.Sweeper
	credentialTTL time.Duration
	redis         pinger
	// failClosed: requests are refused while Redis is down.
	failClosed bool
	// reinstallBootstrap: see Config.ReinstallBootstrapKey.
	reinstallBootstrap bool
	bootstrapKey       string
	showKey            func(string)

	mu      sync.Mutex
	started bool
	stopped bool
	stop    context.CancelFunc // ends the background work Start began
}

// New builds the API.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, state, store, log := deps.JS, deps.State, deps.Access, deps.Log
	if js == nil || state == nil || store == nil || deps.Signer == nil || log == nil {
		return nil, errors.New("api: JetStream, the state bucket, the access store, a signer and a logger are required")
	}
	if (deps.Follow == nil) != (deps.FollowState == nil) {
		return nil, errors.New("api: Follow and FollowState go together")
	}
	if cfg.SecretsKey != nil && deps.Secrets == nil {
		return nil, errors.New("api: a secrets key needs the secrets bucket")
	}
	cfg.setDefaults()
	deps.Telemetry.setDefaults()
	s := &Service{store: store, log: log, conn: newConnWatch(), nc: js.Conn(), reinstallBootstrap: cfg.ReinstallBootstrapKey,
		bootstrapKey: cfg.BootstrapKey, showKey: deps.ShowKey}
	var err error
	if s.metrics, err = newMetrics(context.Background(), deps.Telemetry.MeterProvider); err != nil {
		return nil, fmt.Errorf("api: metrics: %w", err)
	}
	limiter, keyCache, err := s.hotPath(cfg, deps.Telemetry, log)
	if err != nil {
		return nil, err
	}
	s.cached = cachedstore.New(store, keyCache, cfg.CacheTTL, log)
	s.audit = natsjs.NewAuditLog(js, cfg.PublishTimeout, log)
	s.admin = admin.New(s.cached, s.audit, newID, k8spod.Check)
	follow, followState := js, state
	if deps.Follow != nil {
		follow, followState = deps.Follow, deps.FollowState
	}
	s.finished = natsjs.NewAuditLog(follow, cfg.PublishTimeout, log)
	s.index = natsjs.NewJobIndex(followState)
	queue := natsjs.NewQueue(js, cfg.PublishTimeout)
	svc := jobs.New(natsjs.NewStore(js, state), queue, queue, s.audit, jobs.Limits{
		DefaultTimeout: cfg.DefaultTimeout, MaxTimeout: cfg.MaxTimeout, ClaudeCommand: cfg.ClaudeCommand, MaxDelay: cfg.MaxDelay,
	}, newID)
	smetrics, err := newScheduleMetrics(deps.Telemetry.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("api: metrics: %w", err)
	}
	clock := deps.Clock
	if clock == nil {
		clock = time.Now
	}
	s.schedules = schedules.New(natsjs.NewSchedules(js), svc, s.cached, s.audit, smetrics, newID, clock)
	var natsCreds httpapi.NATSCredentials
	if len(cfg.NATSCalloutSeed) > 0 {
		issuer, err := nkeys.FromSeed(cfg.NATSCalloutSeed)
		if err != nil {
			return nil, errors.New("api: the NATS auth callout seed is not an nkey seed")
		}
		if pub, err := issuer.PublicKey(); err != nil || !nkeys.IsValidPublicAccountKey(pub) {
			return nil, errors.New("api: the NATS auth callout seed must be an account seed (SA…)")
		}
		var xkey nkeys.KeyPair
		if len(cfg.NATSCalloutXKeySeed) > 0 {
			if xkey, err = nkeys.FromCurveSeed(cfg.NATSCalloutXKeySeed); err != nil {
				return nil, errors.New("api: the NATS auth callout xkey seed must be a curve seed (SX…)")
			}
		}
		s.callout = &natsauth.Callout{Gate: &access.StreamGate{Signer: deps.Signer, Keys: store, Projects: store},
			Issuer: issuer, Account: cfg.NATSCalloutAccount, XKey: xkey, Timeout: cfg.PublishTimeout,
			Log: log.With("component", "nats-auth-callout")}
		natsCreds = natsauth.Minter{Signer: deps.Signer, TTL: cfg.NATSCredentialTTL}
		s.credentialTTL = cfg.NATSCredentialTTL
		if deps.NATSSystem != nil {
			s.sweeper = &natsauth.Sweeper{Gate: s.callout.Gate, Conn: deps.NATSSystem, Account: cfg.NATSCalloutAccount, Every: cfg.NATSSweepEvery,
				Kicked: s.metrics.Kicked, Log: log.With("component", "nats-credential-sweeper")}
		}
	}
	var secrets httpapi.Secrets
	var hooks httpapi.Webhooks
	if cfg.SecretsKey != nil {
		box, err := seal.New(cfg.SecretsKey)
		if err != nil {
			return nil, fmt.Errorf("api: secrets key: %w", err)
		}
		store := natsjs.NewSecrets(deps.Secrets, box)
		svc.UseSecrets(store)
		secrets = store
		if deps.Webhooks != nil && deps.WebhookDeliveries != nil {
			hooks = webhooks.New(webhookstore.New(deps.Webhooks, deps.WebhookDeliveries, box), cfg.WebhookSecretOverlap, newID)
		}
	}
	progress := natsjs.NewBatchProgress(follow, followState, 0)
	s.closers = append(s.closers, progress.Close)
	s.handlers = httpapi.New(httpapi.Deps{
		Secrets: secrets, Webhooks: hooks, NATSCredentials: natsCreds, Jobs: svc, Admin: s.admin, Keys: s.cached, Projects: s.cached, Limiter: limiter,
		Audit: s.audit, Query: auditQuery{s.audit}, Schedules: s.schedules, Dead: natsjs.NewDeadLetters(js, state), Index: s.index, Output: natsjs.NewOutput(js), BatchCounts: progress, Pauses: natsjs.NewPauses(js), Signer: deps.Signer, TokenTTL: cfg.TokenTTL,
		KeyLimit:     ratelimit.Limit{Requests: cfg.KeyRateLimit, Window: cfg.KeyRateWindow},
		MaxBodyBytes: cfg.MaxBodyBytes, MaxBatchBytes: cfg.MaxBatchBytes, Log: log,
	})
	s.handlers.SetObserver(s.metrics)
	return s, nil
}

// hotPath builds the rate limiter and the lookup cache: in Redis when a
// URL is configured (shared by every API replica), in process otherwise.
// Both sit behind guards, so a Redis outage degrades to the configured
// policy instead of failing or hanging requests.
func (s *Service) hotPath(cfg Config, tel Telemetry, log *slog.Logger) (ratelimit.Limiter, cache.Cache, error) {
	if cfg.RedisURL == "" {
		// Nothing in process can fail: no guards needed.
		return ratelimit.NewMemory(), cache.NewMemory(100_000), nil
	}
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("api: redis url: %w", err)
	}
	// Without this go-redis ignores context deadlines and waits for its
	// own read timeout, which would defeat the guards' bounds.
	opts.ContextTimeoutEnabled = true
	// RESP2 unless the URL asks for RESP3: rdev uses none of RESP3's push
	// messages, and with it go-redis looks for them before every reply.
	if opts.Protocol == 0 {
		opts.Protocol = 2
	}
	client := redis.NewClient(opts)
	s.redis, s.failClosed = client, cfg.RateLimitFailClosed
	s.closers = append(s.closers, func() { _ = client.Close() })
	if err := tel.instrumentRedis(client); err != nil {
		return nil, nil, fmt.Errorf("api: redis instrumentation: %w", err)
	}
	rlDegraded, cacheDegraded := s.metrics.degradedHook("redis_ratelimit"), s.metrics.degradedHook("redis_cache")
	policy := ratelimit.FailOpen
	if cfg.RateLimitFailClosed {
		policy = ratelimit.FailClosed
	}
	// Every request makes a limit check: under load the autopipeliner
	// sends the checks waiting at one time as one pipeline, which cut the
	// Redis path's cost by about a third (docs/performance.md). A lone
	// check goes out at once; under load one waits at most for the batch
	// in flight. go-redis marks the API experimental: the limiter's
	// conformance and outage tests run on it.
	checks, err := client.AutoPipeline()
	if err != nil {
		return nil, nil, fmt.Errorf("api: redis autopipeline: %w", err)
	}
	lim := ratelimit.NewGuard(redisstore.NewLimiter(checks, "rdev:rl:"), ratelimit.GuardConfig{Policy: policy, Timeout: cfg.RedisTimeout, OnDegraded: func(err error) {
		rlDegraded()
		log.Warn("rate limiter degraded", "policy", policy, "err", err)
	}, OnBreakerChange: tel.breakerHook("redis_ratelimit")})
	far := cache.NewGuard(redisstore.NewCache(client, "rdev:cache:"), cache.GuardConfig{Timeout: cfg.RedisTimeout, OnDegraded: func(err error) {
		cacheDegraded()
		log.Warn("lookup cache degraded; reading the store", "err", err)
	}, OnBreakerChange: tel.breakerHook("redis_cache")})
	s.closers = append(s.closers, far.Close)
	// A near cache in process saves the round trip on hits; every replica
	// drops its entries from the access bucket's watch (see Run).
	return lim, cache.NewTiered(cache.NewMemory(100_000), far, 30*time.Second), nil
}

// Register adds the API's routes to e.
func (s *Service) Register(e *echo.Echo) { s.handlers.Register(e, s.conn.middleware) }

// Bootstrap makes sure an admin key exists. With secret set (from
// RDEV_BOOTSTRAP_API_KEY) the bootstrap key becomes that secret. Without,
// the first start generates one and returns it so it can be shown once;
// later starts return "". A bootstrap key an admin revoked is not put
// back (a warning says why) unless Config.ReinstallBootstrapKey is set.
func (s *Service) Bootstrap(ctx context.Context, secret string) (string, error) {
	generated, err := s.admin.Bootstrap(ctx, secret, s.reinstallBootstrap)
	if errors.Is(err, admin.ErrBootstrapRevoked) {
		s.log.Warn("bootstrap API key not installed: an admin revoked it; start with --reinstall-bootstrap-key (RDEV_REINSTALL_BOOTSTRAP_KEY=true) to put it back",
			"key_id", access.BootstrapKeyID)
		return "", nil
	}
	return generated, err
}

// Start makes sure an admin key exists (Config.BootstrapKey; a generated
// one goes to Deps.ShowKey) and starts the API's background work until
// Shutdown: it drops cache entries other processes changed, audits
// finished jobs and keeps the job index for listings. It returns once
// all three are running.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return nil
	}
	generated, err := s.Bootstrap(ctx, s.bootstrapKey)
	if err != nil {
		return err
	}
	if generated != "" && s.showKey != nil {
		s.showKey(generated)
	}
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.conn.run(life, s.nc)
	if err := s.store.Watch(life, func(c natskv.Change) {
		s.cached.Forget(life, c.Key, c.Project)
		if s.sweeper != nil {
			s.sweeper.Changed() // a revoked key or deleted project may have direct subscribers
		}
	}); err != nil {
		stop()
		return err
	}
	if err := s.finished.RecordFinished(life); err != nil {
		stop()
		return err
	}
	if err := s.index.Run(life); err != nil {
		stop()
		return err
	}
	if s.callout != nil {
		sub, err := s.callout.Subscribe(s.nc)
		if err != nil {
			stop()
			return err
		}
		s.closers = append(s.closers, func() { _ = sub.Unsubscribe() })
		if s.sweeper == nil {
			s.log.Warn("no NATS system user (--nats-system-nkey or --nats-system-user): a direct subscriber's open connection outlives its key's revocation or its project's deletion until its credential expires",
				"expires_after", s.credentialTTL)
		} else {
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.sweeper.Run(life)
			}()
			s.closers = append(s.closers, func() { <-done }) // after stop: the sweep ends with life
		}
	}
	s.started, s.stop = true, stop
	return nil
}

// Ready reports whether the API can serve: started, and with Redis
// configured and --rate-limit-fail-closed, Redis must answer a ping
// (otherwise requests are refused); fail-open, the API serves without
// Redis and stays ready.
func (s *Service) Ready(ctx context.Context) error {
	s.mu.Lock()
	started, stopped := s.started, s.stopped
	s.mu.Unlock()
	switch {
	case stopped:
		return errors.New("shutting down")
	case !started:
		return errors.New("not started")
	case s.redis == nil || !s.failClosed:
		return nil
	}
	return s.redis.Ping(ctx).Err()
}

// Shutdown ends the background work and releases the Redis connections.
// Requests are the HTTP server's: shut it down first. It returns at once
// and may be called more than once, and before Start.
func (s *Service) Shutdown(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	if s.stop != nil {
		s.stop()
	}
	for _, c := range s.closers {
		c()
	}
	return nil
}

// auditQuery adapts the audit log to the handlers' port.
type auditQuery struct{ log *natsjs.AuditLog }

func (a auditQuery) Query(ctx context.Context, f httpapi.AuditFilter) ([]contracts.AuditRecord, uint64, error) {
	return a.log.Query(ctx, natsjs.AuditQuery{Project: f.Project, Incarnation: f.Incarnation, Kind: f.Kind, Actor: f.Actor, Since: f.Since, Until: f.Until,
		After: f.After, Limit: f.Limit, MaxScan: 10_000})
}

// newID returns a ULID: sortable by creation time and safe in subjects.
func newID() string { return ulid.Make().String() }
