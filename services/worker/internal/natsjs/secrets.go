package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/seal"
	"github.com/rdev-dev/rdev/services/worker/internal/runner"
)

// Secrets reads project secrets from contracts.BucketSecrets and opens
// them with the worker's key. It implements runner.Secrets.
type Secrets struct {
	kv  jetstream.KeyValue
	box *seal.Box
}

// NewSecrets returns the secrets of the secrets bucket, opened with box.
func NewSecrets(kv jetstream.KeyValue, box *seal.Box) *Secrets { return &Secrets{kv: kv, box: box} }

// Resolve implements runner.Secrets.
func (s *Secrets) Resolve(ctx context.Context, project, incarnation string, refs map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(refs))
	for env, name := range refs {
		if !contracts.ValidSecretName(name) {
			return nil, fmt.Errorf("%w: %q is not a secret name", runner.ErrSecretNotFound, name)
		}
		e, err := s.kv.Get(ctx, contracts.SecretKey(project, name))
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil, fmt.Errorf("%w: project %q has no secret %q", runner.ErrSecretNotFound, project, name)
		}
		if err != nil {
			return nil, fmt.Errorf("read secret %q: %w", name, err)
		}
		var rec contracts.SealedSecret
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, fmt.Errorf("%w: secret %q is not a sealed secret", runner.ErrSecretNotFound, name)
		}
		if rec.ProjectIncarnation != incarnation {
			return nil, fmt.Errorf("%w: project %q has no secret %q", runner.ErrSecretNotFound, project, name)
		}
		val, err := s.box.Open(rec.Sealed, contracts.SecretAAD(project, name))
		if err != nil {
			return nil, fmt.Errorf("%w: secret %q does not open with this worker's secrets key (another key sealed it?)", runner.ErrSecretNotFound, name)
		}
		out[env] = string(val)
	}
	return out, nil
}
