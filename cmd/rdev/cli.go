package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/google/shlex"

	"github.com/rdev-dev/rdev/cmd/rdev/internal/natsconn"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/telemetry"
	"github.com/rdev-dev/rdev/services/api"
	"github.com/rdev-dev/rdev/services/notifier"
	"github.com/rdev-dev/rdev/services/streamer"
	"github.com/rdev-dev/rdev/services/worker"
)

// cli is every command and flag; each flag mirrors an RDEV_* variable.
type cli struct {
	Log       logFlags       `embed:"" prefix:"log-"`
	Telemetry telemetryFlags `embed:""`

	Up       upCmd       `cmd:"" help:"Run api, worker, streamer and notifier in one process on an embedded NATS server."`
	API      apiCmd      `cmd:"" name:"api" help:"Run the API alone against an external NATS."`
	Worker   workerCmd   `cmd:"" help:"Run a worker alone against an external NATS; start several to scale out."`
	Streamer streamerCmd `cmd:"" help:"Run the SSE streamer alone against an external NATS."`
	Notifier notifierCmd `cmd:"" help:"Run the webhook notifier alone against an external NATS; start several to share the endpoints."`
	Schema   schemaCmd   `cmd:"" help:"Write the JSON Schemas of the wire contract (run from the repository root)."`
	Settings settingsCmd `cmd:"" help:"Print every setting of every command: flag, environment variable, default."`
	Version  versionCmd  `cmd:"" help:"Print the version, commit and build date."`
	Probe    probeCmd    `cmd:"" help:"Exit 0 when a URL answers 2xx: the health check of images without a shell."`
	Topology topologyCmd `cmd:"" name:"provision" help:"Create or update the NATS streams and buckets as the NATS admin, then exit."`
	Keygen   keygenCmd   `cmd:"" help:"Print fresh secrets for docker-compose.yml's .env (rdev keygen > .env): bootstrap key, NATS passwords, auth callout key pair."`

	Run         runCmd             `cmd:"" group:"client" help:"Run a command in a project and follow it like a local one: its output, its exit code; Ctrl-C cancels it."`
	Claude      claudeCmd          `cmd:"" group:"client" help:"Ask Claude Code in a project and follow its session, rendered readably (--raw: stream-json)."`
	Logs        logsCmd            `cmd:"" group:"client" help:"Print a job's output; -f follows it to the job's end."`
	Jobs        jobsCmd            `cmd:"" group:"client" help:"List, read, cancel and retry jobs."`
	Batch       batchCmd           `cmd:"" group:"client" help:"Submit a file of jobs as one batch and follow it."`
	Projects    projectsCmd        `cmd:"" group:"client" help:"List and create projects."`
	Keys        keysCmd            `cmd:"" group:"client" help:"List, create and revoke API keys (admin)."`
	Audit       auditCmd           `cmd:"" group:"client" help:"Read the audit log."`
	Queues      queuesCmd          `cmd:"" group:"client" help:"List, pause and resume the priority levels (admin)."`
	Schedules   schedulesCmd       `cmd:"" group:"client" help:"List, create, trigger, pause and delete cron schedules."`
	Webhooks    webhooksCmd        `cmd:"" group:"client" help:"Manage webhook endpoints, test them, read and redeliver their deliveries (admin)."`
	Secrets     secretsCmd         `cmd:"" group:"client" help:"List, set (from standard input) and delete project secrets (admin)."`
	DeadLetters deadLettersCmd     `cmd:"" name:"dead-letters" group:"client" help:"List and retry dead letters."`
	NATSCreds   natsCredentialsCmd `cmd:"" name:"nats-credentials" group:"client" help:"Get a short-lived NATS credential to read a project's output and events straight from NATS (docs/nats.md)."`
	Context     contextCmd         `cmd:"" group:"client" help:"Manage the servers the client commands talk to (config file contexts)."`
	Completion  completionCmd      `cmd:"" group:"client" help:"Print the shell completion script for bash, zsh or fish (e.g. source <(rdev completion bash))."`
}

// defaults are the flags' defaults that the services own (kong.Vars,
// ${name} in a default tag), so they are written once.
func defaults() kong.Vars {
	return kong.Vars{
		"webhook_events":         webhookEventsHelp(),
		"max_body_bytes":         strconv.Itoa(api.DefaultMaxBodyBytes),
		"default_job_timeout":    duration(api.DefaultJobTimeout),
		"max_job_timeout":        duration(api.DefaultMaxJobTimeout),
		"redis_timeout":          duration(api.DefaultRedisTimeout),
		"key_rate_window":        duration(api.DefaultKeyRateWindow),
		"stream_token_ttl":       duration(api.DefaultTokenTTL),
		"nats_credential_ttl":    duration(api.DefaultNATSCredentialTTL),
		"concurrency":            strconv.Itoa(worker.DefaultConcurrency),
		"fair_every":             strconv.Itoa(worker.DefaultFairEvery),
		"high_slots":             strconv.Itoa(worker.DefaultHighSlots),
		"ack_wait":               duration(worker.DefaultAckWait),
		"drain_timeout":          duration(worker.DefaultDrainTimeout),
		"kill_grace":             duration(worker.DefaultKillGrace),
		"executor":               worker.DefaultExecutor,
		"retry_base":             duration(worker.DefaultRetryBase),
		"retry_cap":              duration(worker.DefaultRetryCap),
		"slot_delay":             duration(worker.DefaultSlotDelay),
		"kube_qps":               strconv.Itoa(worker.DefaultKubeQPS),
		"kube_burst":             strconv.Itoa(worker.DefaultKubeBurst),
		"pod_ready_timeout":      duration(worker.DefaultPodReadyTimeout),
		"unavailable_delay":      duration(worker.DefaultUnavailableDelay),
		"sse_heartbeat":          duration(streamer.DefaultHeartbeat),
		"cors_origin":            streamer.DefaultAllowOrigin,
		"sse_unavailable_after":  duration(streamer.DefaultUnavailableAfter),
		"sse_replay_reads":       strconv.Itoa(streamer.DefaultReplayReads),
		"sse_shared_feed_after":  strconv.Itoa(streamer.DefaultSharedFeedAfter),
		"output_max_age":         duration(contracts.DefaultOutputMaxAge),
		"state_ttl":              duration(contracts.DefaultStateTTL),
		"webhook_secret_overlap": duration(api.DefaultWebhookSecretOverlap),
		"webhook_timeout":        duration(notifier.DefaultTimeout),
		"webhook_retry_for":      duration(notifier.DefaultRetryFor),
		"webhook_disable_after":  duration(notifier.DefaultDisableAfter),
		"webhook_lease_ttl":      duration(notifier.DefaultLeaseTTL),
		"webhook_concurrency":    strconv.Itoa(notifier.DefaultConcurrency),
		"max_job_delay":          duration(api.DefaultMaxJobDelay),
	}
}

// duration writes d as a person would: 24h, not 24h0m0s.
func duration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

type logFlags struct {
	Level  slog.Level `default:"info" env:"RDEV_LOG_LEVEL" help:"Log level: debug, info, warn or error."`
	Format string     `default:"text" enum:"text,json" env:"RDEV_LOG_FORMAT" help:"Log format: text or json."`
}

// telemetryFlags read the standard OpenTelemetry variables; the OTLP
// exporters read the rest of OTEL_EXPORTER_OTLP_* themselves.
type telemetryFlags struct {
	OTLPEndpoint string `name:"otlp-endpoint" env:"OTEL_EXPORTER_OTLP_ENDPOINT" help:"Export traces and metrics over OTLP to this endpoint (default: nothing exported; metrics are always at /metrics)."`
	OTLPProtocol string `name:"otlp-protocol" default:"http/protobuf" enum:"grpc,http/protobuf" env:"OTEL_EXPORTER_OTLP_PROTOCOL" help:"OTLP protocol: grpc or http/protobuf."`
	// The per-signal endpoints, as the OTLP specification defines them.
	OTLPTracesEndpoint  string `name:"otlp-traces-endpoint" hidden:"" env:"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" help:"OTLP endpoint URL for traces (overrides --otlp-endpoint)."`
	OTLPMetricsEndpoint string `name:"otlp-metrics-endpoint" hidden:"" env:"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" help:"OTLP endpoint URL for metrics (overrides --otlp-endpoint)."`
}

type natsFlags struct {
	NatsURL string `name:"nats-url" default:"nats://127.0.0.1:4222" env:"RDEV_NATS_URL" help:"NATS server URL(s), comma separated."`
	// Creds, NKey, Password and Token are secrets or name them: logged masked (natsconn.Config.LogValue).
	Creds    string `name:"nats-creds" env:"RDEV_NATS_CREDS" help:"NATS credentials file (JWT and nkey seed, from nsc)."`
	NKey     string `name:"nats-nkey" env:"RDEV_NATS_NKEY" help:"File with an nkey seed to sign in with, e.g. <data-dir>/nats/worker.nk that rdev up wrote."`
	User     string `name:"nats-user" env:"RDEV_NATS_USER" help:"NATS user name."`
	Password string `name:"nats-password" env:"RDEV_NATS_PASSWORD" help:"NATS password of --nats-user."`
	Token    string `name:"nats-token" env:"RDEV_NATS_TOKEN" help:"NATS authentication token."`
	TLSCA    string `name:"nats-tls-ca" env:"RDEV_NATS_TLS_CA" help:"CA certificate(s) that verify the NATS server (PEM)."`
	TLSCert  string `name:"nats-tls-cert" env:"RDEV_NATS_TLS_CERT" help:"Client certificate for NATS servers that verify clients (PEM)."`
	TLSKey   string `name:"nats-tls-key" env:"RDEV_NATS_TLS_KEY" help:"Key of --nats-tls-cert (PEM)."`
}

func (n natsFlags) auth() natsconn.Config {
	return natsconn.Config{Creds: n.Creds, NKey: n.NKey, User: n.User, Password: n.Password, Token: n.Token,
		TLSCA: n.TLSCA, TLSCert: n.TLSCert, TLSKey: n.TLSKey}
}

type topologyFlags struct {
	OutputMaxAge time.Duration `default:"${output_max_age}" env:"RDEV_OUTPUT_MAX_AGE" help:"How long output and events stay replayable."`
	StateTTL     time.Duration `name:"state-ttl" default:"${state_ttl}" env:"RDEV_STATE_TTL" help:"How long job state stays readable after its last change."`
	Replicas     int           `name:"replicas" default:"1" env:"RDEV_REPLICAS" help:"JetStream replicas of every stream and bucket (3 on a cluster: any one node may fail); applied to existing streams at start."`
}

type httpFlags struct {
	HTTPAddr        string        `name:"http-addr" default:"127.0.0.1:8080" env:"RDEV_HTTP_ADDR" help:"HTTP listen address."`
	ShutdownTimeout time.Duration `default:"15s" env:"RDEV_SHUTDOWN_TIMEOUT" help:"How long in-flight HTTP requests may finish at shutdown."`
	TrustedProxies  []string      `name:"trusted-proxies" env:"RDEV_TRUSTED_PROXIES" help:"CIDRs of proxies whose X-Forwarded-For is believed; by default it is not, and the client address is the TCP peer's."`
}

type apiFlags struct {
	MaxBodyBytes   int64         `default:"${max_body_bytes}" env:"RDEV_MAX_BODY_BYTES" help:"Largest accepted request body."`
	DefaultTimeout time.Duration `name:"default-job-timeout" default:"${default_job_timeout}" env:"RDEV_DEFAULT_JOB_TIMEOUT" help:"Timeout of jobs that set none."`
	MaxTimeout     time.Duration `name:"max-job-timeout" default:"${max_job_timeout}" env:"RDEV_MAX_JOB_TIMEOUT" help:"Longest timeout a job may ask for."`
	MaxDelay       time.Duration `name:"max-job-delay" default:"${max_job_delay}" env:"RDEV_MAX_JOB_DELAY" help:"How far ahead a job's run_at may be; bounded by --state-ttl and the jobs stream's max age (a scheduled job must outlive its wait)."`
	ClaudeCommand  string        `name:"claude-command" env:"RDEV_CLAUDE_COMMAND" help:"Command line for prompts: one string split as a shell would (quotes, no expansion) or a JSON array; {prompt} marks where the Claude options, -- and the prompt go (default: claude -p --verbose {prompt})."`
	// BootstrapKey is a secret: never logged.
	BootstrapKey         string        `name:"bootstrap-api-key" env:"RDEV_BOOTSTRAP_API_KEY" help:"Admin API key to install (32+ printable characters, used as given). Without it the first start generates one and prints it once."`
	ReinstallBootstrap   bool          `name:"reinstall-bootstrap-key" env:"RDEV_REINSTALL_BOOTSTRAP_KEY" help:"Install --bootstrap-api-key again even if it was revoked (a revoked bootstrap key otherwise stays revoked across restarts)."`
	RedisURL             string        `name:"redis-url" env:"RDEV_REDIS_URL" help:"Redis for rate-limit counters and the key/project cache shared by API replicas (redis:// or unix://); in process when empty. Speaks RESP2 unless the URL says ?protocol=3."`
	RedisTimeout         time.Duration `name:"redis-timeout" default:"${redis_timeout}" env:"RDEV_REDIS_TIMEOUT" help:"Longest a Redis call may take before it counts as a failure."`
	RateLimitFailClosed  bool          `name:"rate-limit-fail-closed" env:"RDEV_RATE_LIMIT_FAIL_CLOSED" help:"Refuse requests (503) while Redis is down, instead of serving them unlimited."`
	KeyRateLimit         int           `name:"key-rate-limit" default:"0" env:"RDEV_KEY_RATE_LIMIT" help:"Requests a key without its own limit may make per --key-rate-window (0: unlimited)."`
	KeyRateWindow        time.Duration `name:"key-rate-window" default:"${key_rate_window}" env:"RDEV_KEY_RATE_WINDOW" help:"Window of --key-rate-limit."`
	StreamTokenTTL       time.Duration `name:"stream-token-ttl" default:"${stream_token_ttl}" env:"RDEV_STREAM_TOKEN_TTL" help:"How long the token in a submit reply's events_url opens the stream."`
	UITraceURL           string        `name:"ui-trace-url" env:"RDEV_UI_TRACE_URL" help:"Link of a trace in your tracing UI, {trace_id} marking the id (e.g. https://jaeger.example/trace/{trace_id}): the dashboard links a job's trace id to it."`
	WebhookSecretOverlap time.Duration `name:"webhook-secret-overlap" default:"${webhook_secret_overlap}" env:"RDEV_WEBHOOK_SECRET_OVERLAP" help:"How long a webhook's previous signing secret keeps signing beside the new one after a rotation."`
	NATSCalloutKeyFile   string        `name:"nats-callout-key-file" env:"RDEV_NATS_CALLOUT_KEY_FILE" help:"File with the account nkey seed (SA…) whose public key is the NATS server's auth_callout issuer: the API then serves the auth callout and mints NATS credentials for direct subscribers (POST /v1/projects/{p}/nats-credentials). rdev up uses <data-dir>/nats/callout.nk."`
	// NATSCalloutKey is a secret: never logged.
	NATSCalloutKey      string `name:"nats-callout-key" env:"RDEV_NATS_CALLOUT_KEY" help:"The seed of --nats-callout-key-file given directly (for an environment variable from a secret); the file wins when both are set."`
	NATSCalloutAccount  string `name:"nats-callout-account" env:"RDEV_NATS_CALLOUT_ACCOUNT" help:"The account direct subscribers are placed in. A server with an authorization block: the auth_callout account's name (empty: $G, the global account). A server in operator mode: the public key (A…) of rdev's account, whose JWT configures the callout (nsc edit authcallout) and of which --nats-callout-key-file holds the key or a signing key."`
	NATSCalloutXKeyFile string `name:"nats-callout-xkey-file" env:"RDEV_NATS_CALLOUT_XKEY_FILE" help:"File with the curve key seed (SX…) whose public key is the auth callout's xkey (auth_callout's xkey, or the account JWT's): the server encrypts its requests to it and the API encrypts its answers. Needed only when the server or account sets an xkey."`
	// NATSCalloutXKey is a secret: never logged.
	NATSCalloutXKey string `name:"nats-callout-xkey" env:"RDEV_NATS_CALLOUT_XKEY" help:"The seed of --nats-callout-xkey-file given directly (for an environment variable from a secret); the file wins when both are set."`
	NATSSystemNKey  string `name:"nats-system-nkey" env:"RDEV_NATS_SYSTEM_NKEY" help:"File with the nkey seed of the NATS system account's user that may list connections and close them (RDEV_SYSTEM_PERMISSIONS): the API then closes a direct subscriber's open connections within seconds of its key's revocation or its project's deletion, instead of at its credential's expiry. rdev up uses <data-dir>/nats/system.nk."`
	NATSSystemCreds string `name:"nats-system-creds" env:"RDEV_NATS_SYSTEM_CREDS" help:"The system account's user of --nats-system-nkey as a credentials file (a user JWT and its seed: nsc, under operator mode)."`
	NATSSystemUser  string `name:"nats-system-user" env:"RDEV_NATS_SYSTEM_USER" help:"The system account's user of --nats-system-nkey, signing in with a password instead (--nats-system-password)."`
	// NATSSystemPassword is a secret: never logged.
	NATSSystemPassword string        `name:"nats-system-password" env:"RDEV_NATS_SYSTEM_PASSWORD" help:"Password of --nats-system-user."`
	NATSCredentialTTL  time.Duration `name:"nats-credential-ttl" default:"${nats_credential_ttl}" env:"RDEV_NATS_CREDENTIAL_TTL" help:"How long a minted NATS credential is admitted; the server closes its connections when it expires."`
}

type workerFlags struct {
	WorkerID      string        `name:"worker-id" env:"RDEV_WORKER_ID" help:"Worker id (default: host-pid-random)."`
	Concurrency   int           `default:"${concurrency}" env:"RDEV_CONCURRENCY" help:"Jobs run at once by this worker."`
	FairEvery     int           `default:"${fair_every}" env:"RDEV_FAIR_EVERY" help:"Each lower priority gets at least one of every N dispatches while it has work."`
	HighSlots     int           `name:"high-slots" default:"${high_slots}" env:"RDEV_HIGH_SLOTS" help:"Run slots beyond --concurrency that only high-priority jobs use, so a high job starts at once while lower ones fill every slot (0: none)."`
	PrioritySlots slotsFlag     `name:"priority-slots" mapsep:"," env:"RDEV_PRIORITY_SLOTS" help:"Most jobs of a priority run at once on this worker, e.g. low=1 (1 or more): the other levels take the free slots, so capping low keeps CPU for normal and high work."`
	AckWait       time.Duration `default:"${ack_wait}" env:"RDEV_ACK_WAIT" help:"Time without a heartbeat after which a job is redelivered (worker presumed lost)."`
	DrainTimeout  time.Duration `default:"${drain_timeout}" env:"RDEV_DRAIN_TIMEOUT" help:"Time running jobs get to finish at shutdown before they are handed back."`
	KillGrace     time.Duration `default:"${kill_grace}" env:"RDEV_KILL_GRACE" help:"Time between SIGTERM and SIGKILL when a job is stopped."`
	Executor      string        `default:"${executor}" enum:"local,kubernetes" env:"RDEV_EXECUTOR" help:"Where jobs run: local (processes on this machine) or kubernetes (each project's pod)."`
	RetryBase     time.Duration `name:"retry-base" default:"${retry_base}" env:"RDEV_RETRY_BASE" help:"Backoff before a job's second attempt; it doubles per attempt, with full jitter."`
	RetryCap      time.Duration `name:"retry-cap" default:"${retry_cap}" env:"RDEV_RETRY_CAP" help:"Longest backoff between two attempts of a job."`
	SlotDelay     time.Duration `name:"slot-delay" default:"${slot_delay}" env:"RDEV_SLOT_DELAY" help:"How long a job whose project runs max_concurrent_jobs already waits before it is offered again."`
	JobPath       string        `name:"job-path" env:"RDEV_JOB_PATH" help:"PATH of local jobs (default: this process's own PATH)."`
	JobEnv        []string      `name:"job-env" sep:"none" env:"RDEV_JOB_ENV" help:"NAME=VALUE set in every local job's environment; repeat the flag."`
	JobEnvPass    []string      `name:"job-env-passthrough" env:"RDEV_JOB_ENV_PASSTHROUGH" help:"Names of variables of this process passed to every local job (e.g. ANTHROPIC_API_KEY); comma separated or repeated. Others are not passed."`
	JobHome       string        `name:"job-home" env:"RDEV_JOB_HOME" help:"HOME of local jobs (default: the project's workspace)."`
	JobUser       string        `name:"job-user" env:"RDEV_JOB_USER" help:"User (name or uid) local jobs run as when rdev runs as root, so a job cannot read the data directory (default: nobody when root; root keeps jobs as root)."`
	JobNice       niceFlag      `name:"job-nice" mapsep:"," env:"RDEV_JOB_NICE" help:"Niceness added to local jobs per priority, as nice -n does, e.g. low=10,normal=5 (0 to 19), or idle (e.g. low=idle: Linux's SCHED_IDLE, the jobs get only CPU nothing else wants): when the CPU is short, NATS, the services and higher priorities get it first. Not for the kubernetes executor."`
	K8s           k8sFlags      `embed:""`
}

// niceFlag is --job-nice: a niceness, or idle, by priority name.
type niceFlag map[string]string

// k8sFlags configure the Kubernetes executor.
type k8sFlags struct {
	Kubeconfig       string        `env:"RDEV_KUBECONFIG,KUBECONFIG" help:"Kubeconfig file(s) for the kubernetes executor (default: in-cluster configuration)."`
	Namespace        string        `env:"RDEV_NAMESPACE" help:"Namespace of the project pods (default: the kubeconfig context's or service account's, else default)."`
	PodTemplate      string        `name:"pod-template" env:"RDEV_POD_TEMPLATE" help:"YAML file with the Pod created for a project that has none (default: a small busybox pod)."`
	CreatePods       bool          `name:"create-pods" default:"true" negatable:"" env:"RDEV_CREATE_PODS" help:"Create a project's pod when it has none."`
	KubeQPS          float32       `name:"kube-qps" default:"${kube_qps}" env:"RDEV_KUBE_QPS" help:"Client-side rate limit of Kubernetes API requests per second."`
	KubeBurst        int           `name:"kube-burst" default:"${kube_burst}" env:"RDEV_KUBE_BURST" help:"Burst above the Kubernetes API rate limit."`
	PodReadyTimeout  time.Duration `name:"pod-ready-timeout" default:"${pod_ready_timeout}" env:"RDEV_POD_READY_TIMEOUT" help:"How long a job waits for its project's pod to become Ready."`
	UnavailableDelay time.Duration `name:"unavailable-delay" default:"${unavailable_delay}" env:"RDEV_UNAVAILABLE_DELAY" help:"Delay before a job is tried again while the Kubernetes API is unavailable."`
}

type streamerFlags struct {
	SSEHeartbeat time.Duration `name:"sse-heartbeat" default:"${sse_heartbeat}" env:"RDEV_SSE_HEARTBEAT" help:"Interval of SSE keep-alive comments."`
	CORSOrigins  []string      `name:"cors-origin" default:"${cors_origin}" env:"RDEV_CORS_ORIGINS" help:"Origins allowed to read streams from a browser."`
	// UnavailableAfter: a browser's EventSource gives up for good on an
	// error event or a 503, so the streamer waits this long first.
	UnavailableAfter time.Duration `name:"sse-unavailable-after" default:"${sse_unavailable_after}" env:"RDEV_SSE_UNAVAILABLE_AFTER" help:"How long a stream rides out failing NATS storage (clients kept and pinged) before it sends error unavailable."`
	ReplayReads      int           `name:"sse-replay-reads" default:"${sse_replay_reads}" env:"RDEV_SSE_REPLAY_READS" help:"How many history reads of replaying streams run at once; more wait their turn (a reconnect storm queues instead of failing)."`
	SharedFeedAfter  int           `name:"sse-shared-feed-after" default:"${sse_shared_feed_after}" env:"RDEV_SSE_SHARED_FEED_AFTER" help:"How many watched streams (live feeds with a JetStream consumer each) make further ones share one consumer over all output; -1 shares every feed."`
}

// notifierFlags configure webhook deliveries (docs/webhooks.md).
type notifierFlags struct {
	AllowCIDRs   []string      `name:"webhook-allow-cidrs" env:"RDEV_WEBHOOK_ALLOW_CIDRS" help:"Networks webhooks may be delivered to although not public (e.g. 10.1.2.0/24 for an internal receiver); by default loopback, private, link-local, CGNAT, multicast and metadata addresses are refused."`
	Timeout      time.Duration `name:"webhook-timeout" default:"${webhook_timeout}" env:"RDEV_WEBHOOK_TIMEOUT" help:"Longest one webhook attempt may take."`
	RetryFor     time.Duration `name:"webhook-retry-for" default:"${webhook_retry_for}" env:"RDEV_WEBHOOK_RETRY_FOR" help:"How long a webhook delivery is retried (5s, 5m, 30m, 2h, 5h, then every 10h) before it is exhausted."`
	DisableAfter time.Duration `name:"webhook-disable-after" default:"${webhook_disable_after}" env:"RDEV_WEBHOOK_DISABLE_AFTER" help:"How long a webhook endpoint may fail without a success before it is disabled."`
	LeaseTTL     time.Duration `name:"webhook-lease-ttl" default:"${webhook_lease_ttl}" env:"RDEV_WEBHOOK_LEASE_TTL" help:"How soon another notifier takes over the endpoints of one that died."`
	Concurrency  int           `name:"webhook-concurrency" default:"${webhook_concurrency}" env:"RDEV_WEBHOOK_CONCURRENCY" help:"Webhook attempts in flight to one endpoint (one per job at a time)."`
}

func (n notifierFlags) config() (notifier.Config, error) {
	cfg := notifier.Config{Timeout: n.Timeout, RetryFor: n.RetryFor, DisableAfter: n.DisableAfter, LeaseTTL: n.LeaseTTL, Concurrency: n.Concurrency}
	for _, c := range n.AllowCIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return cfg, fmt.Errorf("--webhook-allow-cidrs %q: %w", c, err)
		}
		cfg.AllowCIDRs = append(cfg.AllowCIDRs, p.Masked())
	}
	return cfg, nil
}

type upCmd struct {
	HTTP     httpFlags     `embed:""`
	Topology topologyFlags `embed:""`
	API      apiFlags      `embed:""`
	Worker   workerFlags   `embed:""`
	Streamer streamerFlags `embed:""`
	Notifier notifierFlags `embed:""`
	Secrets  secretsFlags  `embed:""`
	NatsAddr string        `name:"nats-addr" default:"127.0.0.1:4222" env:"RDEV_NATS_ADDR" help:"Where the embedded NATS server listens for other rdev processes."`
	DataDir  string        `name:"data-dir" default:"./data" env:"RDEV_DATA_DIR" help:"JetStream storage and project workspaces."`
	Without  []string      `enum:"worker,streamer,notifier" env:"RDEV_WITHOUT" help:"Services to leave out (worker, streamer, notifier), e.g. to run them as separate processes."`
}

func (c *upCmd) Run(ctx context.Context, forced forcedStop, log *slog.Logger, stdout io.Writer, tel telemetry.Config) error {
	cfg := nodeConfig{telemetry: tel, forced: forced,
		embedNATS: c.NatsAddr, storeDir: filepath.Join(c.DataDir, "jetstream"), workspaces: filepath.Join(c.DataDir, "workspaces"),
		credsDir: filepath.Join(c.DataDir, "nats"),
		http:     c.HTTP, topology: c.Topology, api: &c.API, worker: &c.Worker, streamer: &c.Streamer, notifier: &c.Notifier,
		secrets: upSecrets(c.Secrets, c.DataDir), generateSecretsKey: !c.Secrets.given(),
	}
	for _, s := range c.Without {
		switch s {
		case "worker":
			cfg.worker = nil
		case "streamer":
			cfg.streamer = nil
		case "notifier":
			cfg.notifier = nil
		}
	}
	return runNode(ctx, cfg, log, stdout)
}

type apiCmd struct {
	NATS     natsFlags     `embed:""`
	HTTP     httpFlags     `embed:""`
	Topology topologyFlags `embed:""`
	API      apiFlags      `embed:""`
	Secrets  secretsFlags  `embed:""`
}

func (c *apiCmd) Run(ctx context.Context, forced forcedStop, log *slog.Logger, stdout io.Writer, tel telemetry.Config) error {
	return runNode(ctx, nodeConfig{telemetry: tel, forced: forced, natsURL: c.NATS.NatsURL, natsAuth: c.NATS.auth(), http: c.HTTP, topology: c.Topology, api: &c.API,
		secrets: c.Secrets}, log, stdout)
}

type workerCmd struct {
	NATS     natsFlags     `embed:""`
	Topology topologyFlags `embed:""`
	Worker   workerFlags   `embed:""`
	Secrets  secretsFlags  `embed:""`
	DataDir  string        `name:"data-dir" default:"./data" env:"RDEV_DATA_DIR" help:"Project workspaces live under <data-dir>/workspaces."`
	HTTPAddr string        `name:"http-addr" env:"RDEV_HTTP_ADDR" help:"Serve /metrics, /healthz and /readyz on this address (default: no HTTP server)."`
}

func (c *workerCmd) Run(ctx context.Context, forced forcedStop, log *slog.Logger, stdout io.Writer, tel telemetry.Config) error {
	return runNode(ctx, nodeConfig{telemetry: tel, forced: forced, natsURL: c.NATS.NatsURL, natsAuth: c.NATS.auth(), topology: c.Topology, worker: &c.Worker,
		http: httpFlags{HTTPAddr: c.HTTPAddr, ShutdownTimeout: 5 * time.Second}, probeHTTP: c.HTTPAddr != "",
		workspaces: filepath.Join(c.DataDir, "workspaces"), secrets: c.Secrets}, log, stdout)
}

type streamerCmd struct {
	NATS     natsFlags     `embed:""`
	HTTP     httpFlags     `embed:""`
	Topology topologyFlags `embed:""`
	Streamer streamerFlags `embed:""`
}

func (c *streamerCmd) Run(ctx context.Context, forced forcedStop, log *slog.Logger, stdout io.Writer, tel telemetry.Config) error {
	return runNode(ctx, nodeConfig{telemetry: tel, forced: forced, natsURL: c.NATS.NatsURL, natsAuth: c.NATS.auth(), http: c.HTTP, topology: c.Topology,
		streamer: &c.Streamer}, log, stdout)
}

// config is the API's configuration from the flags, with the secrets key.
type notifierCmd struct {
	NATS     natsFlags     `embed:""`
	Topology topologyFlags `embed:""`
	Notifier notifierFlags `embed:""`
	Secrets  secretsFlags  `embed:""`
	HTTPAddr string        `name:"http-addr" env:"RDEV_HTTP_ADDR" help:"Serve /metrics, /healthz and /readyz on this address (default: no HTTP server)."`
}

func (c *notifierCmd) Run(ctx context.Context, forced forcedStop, log *slog.Logger, stdout io.Writer, tel telemetry.Config) error {
	if !c.Secrets.given() {
		return errors.New("rdev notifier needs the API's secrets key, --secrets-key-file (RDEV_SECRETS_KEY_FILE) or --secrets-key (RDEV_SECRETS_KEY): it opens the webhooks' signing secrets")
	}
	return runNode(ctx, nodeConfig{telemetry: tel, forced: forced, natsURL: c.NATS.NatsURL, natsAuth: c.NATS.auth(), topology: c.Topology,
		notifier: &c.Notifier, http: httpFlags{HTTPAddr: c.HTTPAddr, ShutdownTimeout: 5 * time.Second}, probeHTTP: c.HTTPAddr != "",
		secrets: c.Secrets}, log, stdout)
}

// systemAuth is how the API signs in as the system account's user: with
// --nats-system-creds, --nats-system-nkey or --nats-system-user and its
// password (the first set wins), over the TLS
// of conn; ok is false when neither is set (a user without a password
// too: a chart's optional Secret key left out), and the API then says at
// start that revoked credentials' connections stay open until expiry.
func (a apiFlags) systemAuth(conn natsconn.Config) (c natsconn.Config, ok bool) {
	c = natsconn.Config{Creds: a.NATSSystemCreds, NKey: a.NATSSystemNKey, User: a.NATSSystemUser, Password: a.NATSSystemPassword,
		TLSCA: conn.TLSCA, TLSCert: conn.TLSCert, TLSKey: conn.TLSKey}
	switch {
	case c.Creds != "":
		c.NKey, c.User, c.Password = "", "", ""
	case c.NKey != "":
		c.User, c.Password = "", ""
	}
	return c, c.Creds != "" || c.NKey != "" || (c.User != "" && c.Password != "")
}

func (a apiFlags) config(secretsKey []byte) (api.Config, error) {
	claudeArgv, err := a.claudeArgv()
	if err != nil {
		return api.Config{}, err
	}
	return api.Config{MaxBodyBytes: a.MaxBodyBytes, DefaultTimeout: a.DefaultTimeout,
		MaxTimeout: a.MaxTimeout, MaxDelay: a.MaxDelay, ClaudeCommand: claudeArgv, RedisURL: a.RedisURL, RedisTimeout: a.RedisTimeout,
		RateLimitFailClosed: a.RateLimitFailClosed, KeyRateLimit: a.KeyRateLimit, KeyRateWindow: a.KeyRateWindow,
		TokenTTL: a.StreamTokenTTL, ReinstallBootstrapKey: a.ReinstallBootstrap, BootstrapKey: a.BootstrapKey, SecretsKey: secretsKey,
		WebhookSecretOverlap: a.WebhookSecretOverlap, NATSCredentialTTL: a.NATSCredentialTTL, NATSCalloutAccount: a.NATSCalloutAccount,
	}, nil
}

// config is the streamer's configuration from the flags.
func (s streamerFlags) config() streamer.Config {
	return streamer.Config{Heartbeat: s.SSEHeartbeat, AllowOrigins: s.CORSOrigins, UnavailableAfter: s.UnavailableAfter,
		ReplayReads: s.ReplayReads, SharedFeedAfter: s.SharedFeedAfter}
}

// config is the worker's configuration from the flags: the job
// environment, and the job user as root, whose workspaces move out of a
// data directory it cannot reach.
func (w workerFlags) config(workspaces string, secretsKey []byte, log *slog.Logger) (worker.Config, error) {
	jobEnv, err := w.jobEnv(os.LookupEnv)
	if err != nil {
		return worker.Config{}, err
	}
	jobHome, err := w.jobHome()
	if err != nil {
		return worker.Config{}, err
	}
	jobNice, err := w.JobNice.byPriority()
	if err != nil {
		return worker.Config{}, err
	}
	var jobUser *worker.JobUser
	if w.Executor == worker.ExecutorLocal {
		if jobUser, err = w.jobUser(os.Geteuid()); err != nil {
			return worker.Config{}, err
		}
	}
	if jobUser != nil {
		ws, moved, err := jobWorkspaces(workspaces)
		if err != nil {
			return worker.Config{}, fmt.Errorf("workspaces: %w", err)
		}
		if moved {
			log.Warn("the job user cannot reach the data directory (a directory above it is private); workspaces live elsewhere",
				"workspaces", ws, "job_user", w.JobUser)
		}
		workspaces = ws
	}
	return worker.Config{
		ID: w.WorkerID, Concurrency: w.Concurrency, HighSlots: w.HighSlots, FairEvery: w.FairEvery,
		PrioritySlots: w.PrioritySlots.byPriority(),
		AckWait:       w.AckWait, DrainTimeout: w.DrainTimeout, KillGrace: w.KillGrace,
		Workspaces: workspaces, Executor: w.Executor, UnavailableDelay: w.K8s.UnavailableDelay,
		RetryBase: w.RetryBase, RetryCap: w.RetryCap, SlotDelay: w.SlotDelay,
		JobEnv: jobEnv, JobHome: jobHome, JobUser: jobUser, JobNice: jobNice, SecretsKey: secretsKey,
		Kubernetes: worker.KubernetesConfig{
			Kubeconfig: w.K8s.Kubeconfig, Namespace: w.K8s.Namespace,
			PodTemplate: w.K8s.PodTemplate, CreatePods: w.K8s.CreatePods,
			QPS: w.K8s.KubeQPS, Burst: w.K8s.KubeBurst, ReadyTimeout: w.K8s.PodReadyTimeout,
		},
	}, nil
}

// slotsFlag is --priority-slots: a number of slots by priority name.
type slotsFlag map[string]int

// Validate refuses unknown priorities and caps below one when the
// command line is parsed (kong calls it), before anything starts.
func (f slotsFlag) Validate() error {
	return worker.CheckPrioritySlots(f.byPriority())
}

// byPriority is the flag as worker.Config.PrioritySlots.
func (f slotsFlag) byPriority() map[contracts.Priority]int {
	if len(f) == 0 {
		return nil
	}
	out := make(map[contracts.Priority]int, len(f))
	for p, n := range f {
		out[contracts.Priority(p)] = n
	}
	return out
}

// Validate refuses a value that is neither a number nor idle when the
// command line is parsed (kong calls it), before anything starts.
func (f niceFlag) Validate() error {
	_, err := f.byPriority()
	return err
}

// byPriority is the flag as worker.Config.JobNice; localexec checks the
// names and ranges.
func (f niceFlag) byPriority() (map[contracts.Priority]int, error) {
	if len(f) == 0 {
		return nil, nil
	}
	nice := make(map[contracts.Priority]int, len(f))
	for p, v := range f {
		n, err := strconv.Atoi(v)
		switch {
		case v == "idle":
			n = worker.JobNiceIdle
		case err != nil:
			return nil, fmt.Errorf("%s=%s: want a niceness (0 to 19) or idle", p, v)
		}
		nice[contracts.Priority(p)] = n
	}
	return nice, nil
}

// claudeArgv reads --claude-command: a JSON array, or one string split
// into words as a shell would (quotes and backslashes, no expansion).
// "" leaves the API's default.
func (a apiFlags) claudeArgv() ([]string, error) {
	s := strings.TrimSpace(a.ClaudeCommand)
	if s == "" {
		return nil, nil
	}
	var argv []string
	var err error
	if strings.HasPrefix(s, "[") {
		err = json.Unmarshal([]byte(s), &argv)
	} else {
		argv, err = shlex.Split(s)
	}
	if err != nil || len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("--claude-command %q: want a command line or a JSON array of strings (%w)", a.ClaudeCommand, err)
	}
	return argv, nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// jobEnv is the environment every local job starts from: PATH (the
// worker's own unless --job-path), LANG, the variables named by
// --job-env-passthrough that lookup finds, then --job-env, which wins.
// Nothing else of the worker's environment is passed: it may hold
// credentials the jobs should not see.
func (w workerFlags) jobEnv(lookup func(string) (string, bool)) ([]string, error) {
	path := w.JobPath
	if path == "" {
		path, _ = lookup("PATH")
	}
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	env := []string{"PATH=" + path, "LANG=C.UTF-8"}
	for _, name := range w.JobEnvPass {
		if !envName.MatchString(name) {
			return nil, fmt.Errorf("--job-env-passthrough %q is not a variable name", name)
		}
		if v, ok := lookup(name); ok {
			env = append(env, name+"="+v)
		}
	}
	for _, kv := range w.JobEnv {
		if name, _, ok := strings.Cut(kv, "="); !ok || !envName.MatchString(name) {
			return nil, fmt.Errorf("--job-env %q: want NAME=VALUE", kv)
		}
		env = append(env, kv)
	}
	return env, nil
}

// jobUser resolves --job-user: nil runs jobs as this process's user.
// As root the default is nobody; "root" (or uid 0) keeps jobs as root.
func (w workerFlags) jobUser(euid int) (*worker.JobUser, error) {
	name := w.JobUser
	if name == "" {
		if euid != 0 {
			return nil, nil
		}
		name = "nobody"
	}
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("--job-user %q: %w", name, err)
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("--job-user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("--job-user %q: gid %q: %w", name, u.Gid, err)
	}
	switch {
	case int(uid) == euid:
		return nil, nil
	case euid != 0:
		return nil, fmt.Errorf("--job-user %q: switching user needs rdev to run as root", name)
	}
	return &worker.JobUser{UID: uint32(uid), GID: uint32(gid)}, nil
}

// jobHome is --job-home made absolute ("" stays: the workspace).
func (w workerFlags) jobHome() (string, error) {
	if w.JobHome == "" {
		return "", nil
	}
	return filepath.Abs(w.JobHome)
}
