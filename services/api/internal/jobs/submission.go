package jobs

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Submission is a job as a caller asked for it, before validation.
type Submission struct {
	Project string
	Kind    contracts.Kind
	Command []string // for KindExec
	Prompt  string   // for KindClaude
	Env     map[string]string
	// SecretEnv maps environment variable names to project secret names,
	// resolved by the worker; a name must not be in Env too.
	SecretEnv      map[string]string
	WorkDir        string
	Priority       string
	TimeoutSeconds int
	IdempotencyKey string
	// Trace is the caller's W3C trace context (traceparent, tracestate),
	// passed on with the job so its spans can join the caller's trace.
	Trace map[string]string
	// Actor is the id of the API key that submitted the job, and ClientIP
	// the address it came from, for the audit log.
	Actor, ClientIP string
	// CanRead says the caller may read the project's jobs: only then is
	// an earlier job under the same idempotency key handed to it (or when
	// it claimed the key itself).
	CanRead bool
	// ProjectIncarnation is the project's (access.Project.Incarnation),
	// recorded on the job so a project created again under the same id
	// does not see it.
	ProjectIncarnation string
	// MaxAttempts bounds the attempts (0 = 1); RetryOnExitCodes are exit
	// codes retried like failures that are not the command's own.
	MaxAttempts      int
	RetryOnExitCodes []int
	// BatchID and BatchAtomic tie the job to its batch.
	BatchID     string
	BatchAtomic bool
	// Claude holds the options of a KindClaude job (see ClaudeOptions).
	Claude contracts.ClaudeOptions
	// Stderr is "", contracts.StderrSeparate or contracts.StderrMerge.
	Stderr string
	// JobID, set only by the scheduler, is the job's id, derived from
	// the run it is (contracts.ScheduleJobID): a second submit with it
	// returns the first one's job.
	JobID string
	// RunAt (RFC 3339) or RunInSeconds delay the job; Deadline (RFC 3339)
	// expires it if it has not started by then.
	RunAt        string
	RunInSeconds int
	Deadline     string
}

// MaxAttempts is the most attempts a job may ask for.
const MaxAttempts = 20

// Limits bound what a submission may ask for. Zero values take defaults.
type Limits struct {
	MaxArgs         int           // argv elements; default 1024
	MaxCommandBytes int           // total argv bytes; default 128 KiB
	MaxEnv          int           // env entries; default 128
	MaxEnvBytes     int           // total env bytes; default 64 KiB
	MaxPromptBytes  int           // prompt bytes after sanitising; default 100 KiB
	DefaultTimeout  time.Duration // when the caller gives none; default 10m
	MaxTimeout      time.Duration // upper bound; default 24h
	// MaxDelay bounds how far ahead run_at may be; default
	// DefaultMaxDelay.
	MaxDelay time.Duration
	// ClaudeCommand is the argv run for a prompt; the element equal to
	// PromptPlaceholder is replaced by the job's options, "--" and the
	// prompt, and elements after it go before the options. Default:
	// claude -p --verbose {prompt}.
	ClaudeCommand []string
}

// PromptPlaceholder marks where ClaudeCommand takes the prompt.
const PromptPlaceholder = "{prompt}"

// defaultClaudeCommand runs Claude Code non-interactively with streamed
// JSON output.
var defaultClaudeCommand = []string{"claude", "-p", "--verbose", PromptPlaceholder}

func (l *Limits) setDefaults() {
	if l.MaxArgs <= 0 {
		l.MaxArgs = 1024
	}
	if l.MaxCommandBytes <= 0 {
		l.MaxCommandBytes = 128 << 10
	}
	if l.MaxEnv <= 0 {
		l.MaxEnv = 128
	}
	if l.MaxEnvBytes <= 0 {
		l.MaxEnvBytes = 64 << 10
	}
	if l.MaxPromptBytes <= 0 {
		l.MaxPromptBytes = 100 << 10
	}
	if l.DefaultTimeout <= 0 {
		l.DefaultTimeout = 10 * time.Minute
	}
	if l.MaxTimeout <= 0 {
		l.MaxTimeout = 24 * time.Hour
	}
	if len(l.ClaudeCommand) == 0 {
		l.ClaudeCommand = defaultClaudeCommand
	}
	if l.MaxDelay <= 0 {
		l.MaxDelay = DefaultMaxDelay
	}
}

var envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// build validates sub and returns the job it describes, without ids.
func (l Limits) build(sub Submission) (contracts.Job, error) {
	if !contracts.ValidProjectID(sub.Project) {
		return contracts.Job{}, invalid("invalid_project", "project id must be a DNS label: 1 to 63 lower-case letters, digits or '-', starting and ending with a letter or digit")
	}
	prio, err := contracts.ParsePriority(sub.Priority)
	if err != nil {
		return contracts.Job{}, invalid("invalid_priority", err.Error())
	}
	timeout, err := l.timeout(sub.TimeoutSeconds)
	if err != nil {
		return contracts.Job{}, err
	}
	argv := sub.Command
	switch sub.Kind {
	case contracts.KindExec:
		if err := l.checkCommand(argv); err != nil {
			return contracts.Job{}, err
		}
	case contracts.KindClaude:
		if argv, err = l.claudeArgv(sub.Prompt, sub.Claude); err != nil {
			return contracts.Job{}, err
		}
	default:
		return contracts.Job{}, invalid("invalid_kind", fmt.Sprintf("unknown job kind %q", sub.Kind))
	}
	if err := l.checkEnv(sub.Env); err != nil {
		return contracts.Job{}, err
	}
	if err := l.checkSecretEnv(sub.Env, sub.SecretEnv); err != nil {
		return contracts.Job{}, err
	}
	if err := checkWorkDir(sub.WorkDir); err != nil {
		return contracts.Job{}, err
	}
	if err := checkIdempotencyKey(sub.IdempotencyKey); err != nil {
		return contracts.Job{}, err
	}
	if err := checkRetries(sub.MaxAttempts, sub.RetryOnExitCodes); err != nil {
		return contracts.Job{}, err
	}
	if sub.Stderr != "" && sub.Stderr != contracts.StderrSeparate && sub.Stderr != contracts.StderrMerge {
		return contracts.Job{}, invalid("invalid_stderr", `stderr must be "separate" (the default) or "merge" (one ordered stream, as 2>&1)`)
	}
	var claude *contracts.ClaudeOptions
	if sub.Kind == contracts.KindClaude {
		o := sub.Claude
		claude = &o
	}
	return contracts.Job{
		Stderr: sub.Stderr, Claude: claude,
		V: contracts.Version, Project: sub.Project, Kind: sub.Kind, Command: argv, Env: sub.Env, SecretEnv: sub.SecretEnv,
		WorkDir: sub.WorkDir, Priority: prio, TimeoutSeconds: int(timeout / time.Second), Attempt: 1,
		IdempotencyKey: sub.IdempotencyKey, Trace: traceContext(sub.Trace),
		MaxAttempts: sub.MaxAttempts, RetryOnExitCodes: sub.RetryOnExitCodes,
		BatchID: sub.BatchID, BatchAtomic: sub.BatchAtomic, ProjectIncarnation: sub.ProjectIncarnation,
	}, nil
}

func checkIdempotencyKey(k string) error {
	if len(k) > 256 || strings.IndexFunc(k, unicode.IsControl) >= 0 {
		return invalid("invalid_idempotency_key", "idempotency_key must be at most 256 bytes without control characters")
	}
	return nil
}

func checkRetries(attempts int, codes []int) error {
	if attempts < 0 || attempts > MaxAttempts {
		return invalid("invalid_max_attempts", fmt.Sprintf("max_attempts must be between 1 and %d (0 or absent means 1)", MaxAttempts))
	}
	if len(codes) > 32 {
		return invalid("invalid_retry_on_exit_codes", "retry_on_exit_codes may list at most 32 codes")
	}
	for _, c := range codes {
		if c < 1 || c > 255 {
			return invalid("invalid_retry_on_exit_codes", fmt.Sprintf("exit code %d in retry_on_exit_codes is not between 1 and 255", c))
		}
	}
	if len(codes) > 0 && attempts < 2 {
		return invalid("invalid_retry_on_exit_codes", "retry_on_exit_codes needs max_attempts of 2 or more")
	}
	return nil
}

// traceContext keeps a well-formed W3C traceparent (and its tracestate);
// anything else is dropped rather than refused: tracing must never fail a
// submit.
func traceContext(in map[string]string) map[string]string {
	if contracts.TraceID(in) == "" {
		return nil
	}
	out := map[string]string{"traceparent": in["traceparent"]}
	if ts := in["tracestate"]; ts != "" && len(ts) <= 512 && strings.IndexFunc(ts, unicode.IsControl) < 0 {
		out["tracestate"] = ts
	}
	return out
}

func (l Limits) timeout(secs int) (time.Duration, error) {
	if secs == 0 {
		return l.DefaultTimeout, nil
	}
	// Compared in seconds: secs times time.Second overflows past ~292 years.
	if secs < 0 || secs > int(l.MaxTimeout/time.Second) {
		return 0, invalid("invalid_timeout", fmt.Sprintf("timeout_seconds must be between 1 and %d (0 or absent means %d)", int(l.MaxTimeout/time.Second), int(l.DefaultTimeout/time.Second)))
	}
	return time.Duration(secs) * time.Second, nil
}

func (l Limits) checkCommand(argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return invalid("invalid_command", "command must be a non-empty array of strings (argv), e.g. [\"sh\",\"-c\",\"echo hi\"]")
	}
	if len(argv) > l.MaxArgs {
		return invalid("command_too_large", fmt.Sprintf("command has %d elements; at most %d are allowed", len(argv), l.MaxArgs))
	}
	total := 0
	for i, a := range argv {
		total += len(a)
		if strings.IndexByte(a, 0) >= 0 {
			return invalid("invalid_command", fmt.Sprintf("command[%d] contains a NUL byte", i))
		}
	}
	if total > l.MaxCommandBytes {
		return invalid("command_too_large", fmt.Sprintf("command is %d bytes; at most %d are allowed", total, l.MaxCommandBytes))
	}
	return nil
}

func (l Limits) checkEnv(env map[string]string) error {
	if len(env) > l.MaxEnv {
		return invalid("invalid_env", fmt.Sprintf("env has %d entries; at most %d are allowed", len(env), l.MaxEnv))
	}
	total := 0
	for k, v := range env {
		if !envNamePattern.MatchString(k) {
			return invalid("invalid_env", fmt.Sprintf("env name %q must match [A-Za-z_][A-Za-z0-9_]*", k))
		}
		if strings.IndexByte(v, 0) >= 0 {
			return invalid("invalid_env", fmt.Sprintf("env %s contains a NUL byte", k))
		}
		total += len(k) + len(v)
	}
	if total > l.MaxEnvBytes {
		return invalid("invalid_env", fmt.Sprintf("env is %d bytes; at most %d are allowed", total, l.MaxEnvBytes))
	}
	return nil
}

// checkSecretEnv checks the secret references of a job: valid variable
// and secret names, within MaxEnv together with env, none set twice.
// Whether the secrets exist is Submit's to check.
func (l Limits) checkSecretEnv(env, secretEnv map[string]string) error {
	if len(env)+len(secretEnv) > l.MaxEnv {
		return invalid("invalid_env", fmt.Sprintf("env has %d entries; at most %d are allowed", len(env)+len(secretEnv), l.MaxEnv))
	}
	for k, name := range secretEnv {
		if !envNamePattern.MatchString(k) {
			return invalid("invalid_env", fmt.Sprintf("env name %q must match [A-Za-z_][A-Za-z0-9_]*", k))
		}
		if _, dup := env[k]; dup {
			return invalid("invalid_env", fmt.Sprintf("env %s is given both as a value and as a secret", k))
		}
		if !contracts.ValidSecretName(name) {
			return invalid("invalid_env", fmt.Sprintf("env %s names the secret %q; a secret name is 1 to 64 letters, digits, '_' or '-'", k, name))
		}
	}
	return nil
}

func checkWorkDir(dir string) error {
	if dir == "" {
		return nil
	}
	// A cleaned relative path leaves the workspace only as ".." or
	// "../…"; a name like "..foo" is an ordinary directory.
	clean := path.Clean(dir)
	if len(dir) > 1024 || strings.IndexByte(dir, 0) >= 0 || path.IsAbs(dir) ||
		clean == ".." || strings.HasPrefix(clean, "../") {
		return invalid("invalid_work_dir", "work_dir must be a relative path inside the workspace (no leading '/' or '..'), at most 1024 bytes")
	}
	return nil
}
