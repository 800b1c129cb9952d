package telemetry

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Breakers reports circuit-breaker states as the gauge rdev.breaker.state
// with a dependency attribute: 0 closed, 1 half-open, 2 open. A breaker
// appears once it changed state (or was Set) for the first time.
type Breakers struct {
	mu     sync.Mutex
	states map[string]int64
}

// NewBreakers registers the gauge on mp.
func NewBreakers(mp metric.MeterProvider) (*Breakers, error) {
	b := &Breakers{states: map[string]int64{}}
	_, err := mp.Meter(meterName).Int64ObservableGauge("rdev.breaker.state",
		metric.WithDescription("Circuit-breaker state per dependency: 0 closed, 1 half-open, 2 open."),
		metric.WithUnit("{state}"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			b.mu.Lock()
			defer b.mu.Unlock()
			for dep, v := range b.states {
				o.Observe(v, metric.WithAttributes(attribute.String("dependency", dep)))
			}
			return nil
		}))
	return b, err
}

// Set records dependency's breaker state: "closed", "half-open" or "open"
// (gobreaker's State.String()). It has the signature of the executors'
// and guards' OnBreakerChange hooks once the dependency is bound.
func (b *Breakers) Set(dependency, state string) {
	v := map[string]int64{"closed": 0, "half-open": 1, "open": 2}[state]
	b.mu.Lock()
	b.states[dependency] = v
	b.mu.Unlock()
}

// Hook returns an OnBreakerChange callback for dependency.
func (b *Breakers) Hook(dependency string) func(from, to string) {
	b.Set(dependency, "closed")
	return func(_, to string) { b.Set(dependency, to) }
}

const meterName = "github.com/rdev-dev/rdev/pkg/telemetry"
