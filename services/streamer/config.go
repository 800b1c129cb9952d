package streamer

import (
	"errors"
	"fmt"
	"time"
)

// Defaults of Config: what a zero field means, and the defaults of
// rdev's flags.
const (
	DefaultHeartbeat         = 15 * time.Second
	DefaultRetry             = 2 * time.Second
	DefaultClientBuffer      = 4096
	DefaultClientBufferBytes = 4 << 20
	DefaultWriteTimeout      = 30 * time.Second
	DefaultUnavailableAfter  = 30 * time.Second
	DefaultAllowOrigin       = "*"
	DefaultReplayReads       = 32
	DefaultSharedFeedAfter   = 256
)

// Config tunes the streamer. Zero values take the defaults above.
type Config struct {
	// Heartbeat is how often an idle stream gets a ": ping" comment, so
	// proxies and clients see the connection alive. Default 15s.
	Heartbeat time.Duration
	// Retry is the reconnection delay sent to clients ("retry:") at
	// connect. Default 2s.
	Retry time.Duration
	// ClientBuffer is how many messages a client may lag behind its
	// stream's hub before the hub cuts it loose and it catches up from
	// storage instead. The queue holding them grows only as far as the
	// client lags, so the bound costs nothing until used. Default 4096.
	ClientBuffer int
	// ClientBufferBytes bounds the same lag in bytes of message data.
	// Default 4 MiB.
	ClientBufferBytes int
	// WriteTimeout is the longest one write to a client may block; a client
	// that stalls longer is dropped and resumes with Last-Event-ID.
	// Default 30s.
	WriteTimeout time.Duration
	// UnavailableAfter is how long the streamer rides out failing storage
	// (NATS reconnecting, JetStream requests timing out under load) before
	// it gives up on a request: an open stream keeps its client, pinged,
	// and resumes from its cursor once storage answers again, and ends
	// with error "unavailable" only once storage has failed this long
	// without the client getting an event; a new request is answered 503
	// after the same time. Default 30s.
	UnavailableAfter time.Duration
	// AllowOrigins are the CORS origins allowed on the events endpoint.
	// Default ["*"].
	AllowOrigins []string
	// ReplayReads is how many storage reads of replays (a batched direct
	// get each, no consumer) run at once; the others wait their turn in
	// line, their clients kept. A reconnect storm of thousands of clients
	// so queues in the streamer instead of failing streams or flooding
	// NATS. A read whose turn does not come within Heartbeat is retried
	// like a storage failure: the client is pinged meanwhile. Default 32.
	ReplayReads int
	// SharedFeedAfter is how many open live feeds (watched streams) make
	// the next one join the streamer's shared live feed, one JetStream
	// consumer over every stream's output demultiplexed by stream id,
	// instead of opening an ordered consumer of its own. Few watched
	// streams keep a consumer each, filtered to their own subjects, so
	// that a streamer serving three clients does not receive all of a
	// busy cluster's output; thousands share one, so that the server is
	// not loaded with a consumer per stream. A negative value puts every
	// feed on the shared one. Default 256.
	SharedFeedAfter int
	// EventLinger is how long a busy project or batch event stream holds
	// its flush, so that a client watching a thousand job events a second
	// gets them in a write every few milliseconds rather than one write
	// each; an event after a quiet spell goes at once. Default 5ms;
	// negative turns it off.
	EventLinger time.Duration
}

func (c *Config) setDefaults() {
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.Retry == 0 {
		c.Retry = DefaultRetry
	}
	if c.ClientBuffer == 0 {
		c.ClientBuffer = DefaultClientBuffer
	}
	if c.ClientBufferBytes == 0 {
		c.ClientBufferBytes = DefaultClientBufferBytes
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.UnavailableAfter == 0 {
		c.UnavailableAfter = DefaultUnavailableAfter
	}
	if len(c.AllowOrigins) == 0 {
		c.AllowOrigins = []string{DefaultAllowOrigin}
	}
	if c.ReplayReads == 0 {
		c.ReplayReads = DefaultReplayReads
	}
	if c.SharedFeedAfter == 0 {
		c.SharedFeedAfter = DefaultSharedFeedAfter
	}
}

// Validate reports every setting that is out of range.
func (c Config) Validate() error {
	var errs []error
	if c.Heartbeat <= 0 {
		errs = append(errs, fmt.Errorf("heartbeat %s: must be positive", c.Heartbeat))
	}
	if c.Retry <= 0 {
		errs = append(errs, fmt.Errorf("retry %s: must be positive", c.Retry))
	}
	if c.ClientBuffer <= 0 {
		errs = append(errs, fmt.Errorf("client buffer %d: must be positive", c.ClientBuffer))
	}
	if c.ClientBufferBytes <= 0 {
		errs = append(errs, fmt.Errorf("client buffer bytes %d: must be positive", c.ClientBufferBytes))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, fmt.Errorf("write timeout %s: must be positive", c.WriteTimeout))
	}
	if c.UnavailableAfter < 0 {
		errs = append(errs, fmt.Errorf("unavailable after %s: must not be negative", c.UnavailableAfter))
	}
	if c.ReplayReads < 0 {
		errs = append(errs, fmt.Errorf("replay reads %d: must not be negative", c.ReplayReads))
	}
	for _, o := range c.AllowOrigins {
		if o == "" {
			errs = append(errs, errors.New("allow origins: empty origin"))
		}
	}
	return errors.Join(errs...)
}
