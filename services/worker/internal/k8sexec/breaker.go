package k8sexec

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"

	"github.com/sony/gobreaker/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/rdev-dev/rdev/services/worker/internal/executor"
)

// newBreaker returns the circuit breaker every Kubernetes API call and
// exec goes through. Only errors that say the API is unreachable or failing
// (transport errors, 5xx, 429) count as failures; a missing pod, a
// conflict or a command's exit status are answers from a working API.
func newBreaker(cfg Config) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "kubernetes-api",
		MaxRequests: 1,
		Timeout:     cfg.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.BreakerFailures },
		IsSuccessful: func(err error) bool {
			return !apiDown(err)
		},
		IsExcluded: func(err error) bool {
			return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			cfg.Log.Warn("kubernetes API circuit breaker changed state", "from", from.String(), "to", to.String())
			if cfg.OnBreakerChange != nil {
				cfg.OnBreakerChange(from.String(), to.String())
			}
		},
	})
}

// call runs one API request through the breaker. A refused call (breaker
// open) and a failure that says the API is down wrap
// executor.ErrUnavailable.
func (e *Executor) call(ctx context.Context, what string, req func(ctx context.Context) error) error {
	done, err := e.breaker.Allow()
	if err != nil {
		return fmt.Errorf("%s: %w: %w", what, executor.ErrUnavailable, err)
	}
	err = req(ctx)
	done(err)
	if err == nil {
		return nil
	}
	if apiDown(err) {
		return fmt.Errorf("%s: %w: %w", what, executor.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// apiDown reports whether err says the Kubernetes API cannot serve
// requests now: it is unreachable, failing (5xx) or throttling (429).
func apiDown(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var upgrade *httpstream.UpgradeFailureError
	if errors.As(err, &upgrade) && upgrade.Cause != nil {
		err = upgrade.Cause
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := status.Status().Code
		return code >= 500 || code == 429
	}
	var (
		urlErr *url.Error
		netErr net.Error
	)
	return errors.As(err, &urlErr) || errors.As(err, &netErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}
