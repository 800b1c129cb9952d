// Package api is rdev's job submission service: it validates commands and
// prompts and queues them durably on the prioritized JetStream queue
// before answering 202. cmd/rdev wires it into an HTTP server.
package api

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/rdev-dev/rdev/services/api/internal/httpapi"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
	"github.com/rdev-dev/rdev/services/api/internal/natsjs"
)

// Config tunes the API. Zero values take the documented defaults.
type Config struct {
	// MaxBodyBytes bounds a request body; default 1 MiB.
	MaxBodyBytes int64
	// DefaultTimeout applies to jobs that set none; default 10m.
	DefaultTimeout time.Duration
	// MaxTimeout is the longest timeout a job may ask for; default 24h.
	MaxTimeout time.Duration
	// ClaudeCommand is the argv for prompts, with "{prompt}" where the
	// prompt goes; default claude -p {prompt} --output-format stream-json
	// --verbose.
	ClaudeCommand []string
	// PublishTimeout bounds the wait for JetStream to store a job; default 5s.
	PublishTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 5 * time.Second
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

// Service is the API, ready to be registered on an Echo instance.
type Service struct{ handlers *httpapi.Handlers }

// New builds the API on a JetStream context whose topology is provisioned
// (see pkg/topology) and the state bucket.
func New(cfg Config, js jetstream.JetStream, state jetstream.KeyValue, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	svc := jobs.New(natsjs.NewStore(state), natsjs.NewQueue(js, cfg.PublishTimeout), jobs.Limits{
		DefaultTimeout: cfg.DefaultTimeout, MaxTimeout: cfg.MaxTimeout, ClaudeCommand: cfg.ClaudeCommand,
	}, newID)
	return &Service{handlers: httpapi.New(svc, cfg.MaxBodyBytes, log)}, nil
}

// Register adds the API's routes to e.
func (s *Service) Register(e *echo.Echo) { s.handlers.Register(e) }

// newID returns a ULID: sortable by creation time and safe in subjects.
func newID() string { return ulid.Make().String() }
