package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/seal"
)

// Secrets keeps project secrets in contracts.BucketSecrets, each value
// sealed with the configured key before it leaves the process. A secret
// of another incarnation of its project counts as absent.
type Secrets struct {
	kv  jetstream.KeyValue
	box *seal.Box
	now func() time.Time
}

// NewSecrets returns the secrets store on the secrets bucket, sealing
// with box.
func NewSecrets(kv jetstream.KeyValue, box *seal.Box) *Secrets {
	return &Secrets{kv: kv, box: box, now: time.Now}
}

// Put seals value and stores it as project's secret name, and reports
// whether the secret is new (to this incarnation of the project).
func (s *Secrets) Put(ctx context.Context, project, incarnation, name, value string) (bool, error) {
	_, found, err := s.get(ctx, project, incarnation, name)
	if err != nil {
		return false, err
	}
	rec := contracts.SealedSecret{V: contracts.Version, Project: project, Name: name, UpdatedAt: s.now().UTC(),
		Sealed: s.box.Seal([]byte(value), contracts.SecretAAD(project, name)), ProjectIncarnation: incarnation}
	b, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	if _, err := s.kv.Put(ctx, contracts.SecretKey(project, name), b); err != nil {
		return false, fmt.Errorf("store secret: %w", err)
	}
	return !found, nil
}

// List returns the names and update times of project's secrets, by name.
func (s *Secrets) List(ctx context.Context, project, incarnation string) ([]contracts.SecretInfo, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, contracts.SecretKeyPrefix(project)+"*")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return []contracts.SecretInfo{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	out := []contracts.SecretInfo{}
	for key := range lister.Keys() {
		name := strings.TrimPrefix(key, contracts.SecretKeyPrefix(project))
		rec, found, err := s.get(ctx, project, incarnation, name)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, contracts.SecretInfo{Name: rec.Name, UpdatedAt: rec.UpdatedAt})
		}
	}
	slices.SortFunc(out, func(a, b contracts.SecretInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Exists reports whether project has secret name.
func (s *Secrets) Exists(ctx context.Context, project, incarnation, name string) (bool, error) {
	_, found, err := s.get(ctx, project, incarnation, name)
	return found, err
}

// Delete removes project's secret name and reports whether there was one.
func (s *Secrets) Delete(ctx context.Context, project, incarnation, name string) (bool, error) {
	_, found, err := s.get(ctx, project, incarnation, name)
	if err != nil || !found {
		return false, err
	}
	// Purge, not Delete: no earlier revision is kept either way (history
	// 1), and a purge leaves only a marker.
	if err := s.kv.Purge(ctx, contracts.SecretKey(project, name)); err != nil {
		return false, fmt.Errorf("delete secret: %w", err)
	}
	return true, nil
}

func (s *Secrets) get(ctx context.Context, project, incarnation, name string) (contracts.SealedSecret, bool, error) {
	e, err := s.kv.Get(ctx, contracts.SecretKey(project, name))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return contracts.SealedSecret{}, false, nil
	}
	if err != nil {
		return contracts.SealedSecret{}, false, fmt.Errorf("read secret: %w", err)
	}
	var rec contracts.SealedSecret
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return contracts.SealedSecret{}, false, fmt.Errorf("decode secret %s: %w", e.Key(), err)
	}
	return rec, rec.ProjectIncarnation == incarnation, nil
}
