package notifier

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rdev-dev/rdev/services/notifier/internal/retry"
	"github.com/rdev-dev/rdev/services/notifier/internal/send"
)

// Defaults of Config: what a zero field means, and the defaults of rdev's
// flags.
const (
	DefaultTimeout          = 15 * time.Second
	DefaultRetryFor         = 3 * 24 * time.Hour
	DefaultDisableAfter     = 5 * 24 * time.Hour
	DefaultLeaseTTL         = 30 * time.Second
	DefaultConcurrency      = 16
	DefaultBreakerThreshold = 5
	DefaultBreakerCooldown  = 30 * time.Second
	maxBreakerCooldown      = 30 * time.Minute
	defaultJitter           = 0.2
)

// Config tunes the notifier. Zero values take the defaults above.
type Config struct {
	// ID names this replica in endpoint leases; default random.
	ID string
	// AllowCIDRs are networks delivered to although not public: internal
	// receivers the operator trusts (--webhook-allow-cidrs).
	AllowCIDRs []netip.Prefix
	// Timeout bounds one attempt. Default 15s.
	Timeout time.Duration
	// RetrySchedule is the wait before each retry, the last repeated.
	// Default retry.DefaultSchedule (5s, 5m, 30m, 2h, 5h, 10h).
	RetrySchedule []time.Duration
	// RetryFor is how long after its first attempt a delivery may be
	// retried before it is exhausted. Default 3 days.
	RetryFor time.Duration
	// NoJitter turns the ±20% jitter of retry waits off (tests).
	NoJitter bool
	// DisableAfter is how long an endpoint may fail without a success
	// before it is disabled. Default 5 days.
	DisableAfter time.Duration
	// LeaseTTL is how long a replica's claim on an endpoint lasts unless
	// renewed: a replica that dies hands its endpoints over after it.
	// Default 30s.
	LeaseTTL time.Duration
	// Concurrency bounds the attempts in flight to one endpoint (one per
	// job at a time). Default 16.
	Concurrency int
	// BreakerThreshold is how many failed attempts in a row open an
	// endpoint's circuit breaker; BreakerCooldown how long it stays open
	// at first (doubling while the probe after it fails, up to 30m).
	BreakerThreshold int
	BreakerCooldown  time.Duration
	// Resolve looks receivers' host names up; nil: the system resolver.
	Resolve send.Resolver
}

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RetrySchedule == nil {
		c.RetrySchedule = retry.DefaultSchedule
	}
	if c.RetryFor == 0 {
		c.RetryFor = DefaultRetryFor
	}
	if c.DisableAfter == 0 {
		c.DisableAfter = DefaultDisableAfter
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.BreakerThreshold == 0 {
		c.BreakerThreshold = DefaultBreakerThreshold
	}
	if c.BreakerCooldown == 0 {
		c.BreakerCooldown = DefaultBreakerCooldown
	}
}

// Validate reports every setting that is out of range.
func (c Config) Validate() error {
	var errs []error
	for name, d := range map[string]time.Duration{"timeout": c.Timeout, "retry for": c.RetryFor, "disable after": c.DisableAfter,
		"lease ttl": c.LeaseTTL, "breaker cooldown": c.BreakerCooldown} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be positive", name, d))
		}
	}
	for _, d := range c.RetrySchedule {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("retry schedule %s: every wait must be positive", d))
		}
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency %d: must be at least 1", c.Concurrency))
	}
	if c.BreakerThreshold < 1 {
		errs = append(errs, fmt.Errorf("breaker threshold %d: must be at least 1", c.BreakerThreshold))
	}
	for _, p := range c.AllowCIDRs {
		if !p.IsValid() {
			errs = append(errs, errors.New("allow cidrs: invalid prefix"))
		}
	}
	return errors.Join(errs...)
}
