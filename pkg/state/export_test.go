package state

import "github.com/nats-io/nats.go/jetstream"

// WithDirectGetsMaxBytes is WithDirectGets with the server asked to
// answer at most maxBytes per request, so a test sees answers cut short.
func WithDirectGetsMaxBytes(js jetstream.JetStream, maxBytes int) Option {
	return func(s *Store) {
		WithDirectGets(js)(s)
		s.direct.maxBytes = maxBytes
	}
}
