// Package admin manages projects and API keys: it creates, changes,
// deletes and revokes them in the system of record and writes an audit
// record of every change.
package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Store is the system of record for projects and keys.
type Store interface {
	access.Keys
	Project(ctx context.Context, id string) (access.Project, error)
	Projects(ctx context.Context) ([]access.Project, error)
	CreateProject(ctx context.Context, p access.Project) error
	UpdateProject(ctx context.Context, id string, change func(*access.Project) error) (access.Project, error)
	DeleteProject(ctx context.Context, id string) error
	Keys(ctx context.Context) ([]access.Key, error)
	CreateKey(ctx context.Context, k access.Key) error
	UpdateKey(ctx context.Context, id string, change func(*access.Key) error) (access.Key, error)
	PutKey(ctx context.Context, k access.Key) error
}

// Audit appends records to the audit log, durably before returning.
type Audit interface {
	Record(ctx context.Context, rec contracts.AuditRecord) error
}

// Actor is who asks for a change.
type Actor struct {
	// KeyID is the API key used ("system" for rdev itself).
	KeyID string
	// ClientIP is the request's address.
	ClientIP string
}

// ErrBootstrapRevoked is returned by Bootstrap when the bootstrap key was
// revoked and is not to be re-installed.
var ErrBootstrapRevoked = errors.New("the bootstrap API key was revoked by an admin; it is not re-installed")

// ErrUnavailable wraps failures of the store or the audit log.
var ErrUnavailable = errors.New("unavailable")

// PodCheck validates a project's pod settings the way the executor that
// applies them will read them; it returns an *access.Error (KindInvalid)
// when they are not usable.
type PodCheck func(access.PodSettings) error

// Service manages projects and keys.
type Service struct {
	store    Store
	audit    Audit
	newID    func() string
	now      func() time.Time
	checkPod PodCheck
}

// New returns the service. newID must return ids for which
// contracts.ValidID holds; checkPod judges pod settings (nil accepts any).
func New(store Store, audit Audit, newID func() string, checkPod PodCheck) *Service {
	if checkPod == nil {
		checkPod = func(access.PodSettings) error { return nil }
	}
	return &Service{store: store, audit: audit, newID: newID, now: time.Now, checkPod: checkPod}
}

// CreateProject stores a new project.
func (s *Service) CreateProject(ctx context.Context, by Actor, p access.Project) (access.Project, error) {
	if err := access.NormalizeProject(&p); err != nil {
		return access.Project{}, err
	}
	if p.Pod != nil {
		if err := s.checkPod(*p.Pod); err != nil {
			return access.Project{}, err
		}
	}
	p.Incarnation = s.newID()
	p.CreatedAt = s.now().UTC()
	p.UpdatedAt = p.CreatedAt
	if err := s.store.CreateProject(ctx, p); err != nil {
		if errors.Is(err, access.ErrExists) {
			return access.Project{}, &access.Error{Kind: access.KindConflict, Code: "project_exists", Message: fmt.Sprintf("project %q already exists", p.ID)}
		}
		return access.Project{}, unavailable(err)
	}
	return p, s.record(ctx, by, contracts.AuditProjectCreated, p.ID, map[string]any{"project": p}, p.Incarnation)
}

// Project returns a project.
func (s *Service) Project(ctx context.Context, id string) (access.Project, error) {
	p, err := s.store.Project(ctx, id)
	if errors.Is(err, access.ErrNotFound) {
		return access.Project{}, ProjectNotFound(id)
	}
	if err != nil {
		return access.Project{}, unavailable(err)
	}
	return p, nil
}

// checkProjectID refuses an id that is no project id (a wildcard such as
// "*" or ">", say) before any store sees it.
func checkProjectID(id string) error {
	if !contracts.ValidProjectID(id) {
		return &access.Error{Kind: access.KindInvalid, Code: "invalid_project", Message: "project id must be a DNS label: 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit"}
	}
	return nil
}

// ProjectNotFound is the refusal for an unknown project.
func ProjectNotFound(id string) error {
	return &access.Error{Kind: access.KindNotFound, Code: "project_not_found", Message: fmt.Sprintf("no project %q; create it with POST /v1/projects", id)}
}

// Projects returns the projects among ids, or every project when all.
func (s *Service) Projects(ctx context.Context, ids []string, all bool) ([]access.Project, error) {
	ps, err := s.store.Projects(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	if all {
		return ps, nil
	}
	out := ps[:0]
	for _, p := range ps {
		for _, id := range ids {
			if p.ID == id {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// UpdateProject applies patch to a project.
func (s *Service) UpdateProject(ctx context.Context, by Actor, id string, patch access.ProjectPatch) (access.Project, error) {
	if err := checkProjectID(id); err != nil {
		return access.Project{}, err
	}
	if patch.Pod != nil {
		if err := s.checkPod(*patch.Pod); err != nil {
			return access.Project{}, err
		}
	}
	p, err := s.store.UpdateProject(ctx, id, func(p *access.Project) error {
		if err := patch.Apply(p); err != nil {
			return err
		}
		p.UpdatedAt = s.now().UTC()
		return nil
	})
	if err != nil {
		return access.Project{}, s.storeError(err, id)
	}
	return p, s.record(ctx, by, contracts.AuditProjectUpdated, id, map[string]any{"project": p}, p.Incarnation)
}

// DeleteProject deletes a project and takes its scopes away from every
// key, so a project created later under the same id is not open to the
// old project's keys. A key left with no scope is revoked.
func (s *Service) DeleteProject(ctx context.Context, by Actor, id string) error {
	if err := checkProjectID(id); err != nil {
		return err
	}
	if err := s.store.DeleteProject(ctx, id); err != nil {
		return s.storeError(err, id)
	}
	keys, err := s.store.Keys(ctx)
	if err != nil {
		return unavailable(err)
	}
	var stripped []string
	for _, k := range keys {
		if len(access.ScopesWithout(k.Scopes, id)) == len(k.Scopes) {
			continue
		}
		_, err := s.store.UpdateKey(ctx, k.ID, func(k *access.Key) error {
			k.Scopes = access.ScopesWithout(k.Scopes, id)
			if len(k.Scopes) == 0 && k.RevokedAt == nil {
				now := s.now().UTC()
				k.RevokedAt = &now
			}
			return nil
		})
		if err != nil && !errors.Is(err, access.ErrNotFound) {
			return unavailable(err)
		}
		stripped = append(stripped, k.ID)
	}
	return s.record(ctx, by, contracts.AuditProjectDeleted, id, map[string]any{"keys_changed": stripped})
}

// KeyRequest is what a caller asks of a new key.
type KeyRequest struct {
	Name       string
	Scopes     []string
	AllowedIPs []string
	RateLimit  *access.RateLimit
	ExpiresAt  *time.Time
}

// CreateKey makes a key and returns it with its secret, which is stored
// nowhere: this is the only time anyone sees it.
func (s *Service) CreateKey(ctx context.Context, by Actor, req KeyRequest) (access.Key, string, error) {
	k, err := s.newKey(req)
	if err != nil {
		return access.Key{}, "", err
	}
	// A scope on a project that does not exist would open the project
	// someone creates later under that id.
	for _, p := range access.ScopeProjects(k.Scopes) {
		if _, err := s.Project(ctx, p); err != nil {
			return access.Key{}, "", err
		}
	}
	secret := access.NewSecret(k.ID)
	k.Hash = access.HashSecret(secret)
	if err := s.store.CreateKey(ctx, k); err != nil {
		return access.Key{}, "", unavailable(err)
	}
	if err := s.record(ctx, by, contracts.AuditKeyCreated, "", map[string]any{"key_id": k.ID, "name": k.Name, "scopes": k.Scopes}); err != nil {
		return access.Key{}, "", err
	}
	return k, secret, nil
}

func (s *Service) newKey(req KeyRequest) (access.Key, error) {
	name := strings.TrimSpace(req.Name)
	if name == "" {
		return access.Key{}, &access.Error{Kind: access.KindInvalid, Code: "invalid_name", Message: "a key needs a name of 1 to 200 characters"}
	}
	if err := access.CheckName("a key's name", name); err != nil {
		return access.Key{}, err
	}
	scopes, err := access.NormalizeScopes(req.Scopes)
	if err != nil {
		return access.Key{}, err
	}
	ips, err := access.ParseAllowedIPs(req.AllowedIPs)
	if err != nil {
		return access.Key{}, err
	}
	if req.RateLimit != nil {
		if err := access.NormalizeProject(&access.Project{ID: "x", RateLimit: req.RateLimit}); err != nil {
			return access.Key{}, err
		}
	}
	now := s.now().UTC()
	if req.ExpiresAt != nil && !req.ExpiresAt.After(now) {
		return access.Key{}, &access.Error{Kind: access.KindInvalid, Code: "invalid_expires_at", Message: "expires_at must be in the future"}
	}
	return access.Key{ID: s.newID(), Name: name, Scopes: scopes, AllowedIPs: ips, RateLimit: req.RateLimit,
		ExpiresAt: req.ExpiresAt, CreatedAt: now}, nil
}

// Keys returns every key (hashes included; the transport must not show
// them).
func (s *Service) Keys(ctx context.Context) ([]access.Key, error) {
	ks, err := s.store.Keys(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	return ks, nil
}

// RevokeKey makes a key unusable at once; revoking twice is harmless.
func (s *Service) RevokeKey(ctx context.Context, by Actor, id string) (access.Key, error) {
	if !contracts.ValidID(id) {
		// Not a key id ("*", ">", …): no such key, and never a store query.
		return access.Key{}, &access.Error{Kind: access.KindNotFound, Code: "key_not_found", Message: fmt.Sprintf("no key %q", id)}
	}
	was := false
	k, err := s.store.UpdateKey(ctx, id, func(k *access.Key) error {
		was = k.RevokedAt != nil
		if !was {
			now := s.now().UTC()
			k.RevokedAt = &now
		}
		return nil
	})
	if errors.Is(err, access.ErrNotFound) {
		return access.Key{}, &access.Error{Kind: access.KindNotFound, Code: "key_not_found", Message: fmt.Sprintf("no key %q", id)}
	}
	if err != nil {
		return access.Key{}, unavailable(err)
	}
	if was {
		return k, nil
	}
	return k, s.record(ctx, by, contracts.AuditKeyRevoked, "", map[string]any{"key_id": id, "name": k.Name})
}

// Bootstrap makes sure an admin key exists so the first user can get in.
// With a secret (RDEV_BOOTSTRAP_API_KEY) the bootstrap key is set to it,
// replacing an earlier one. Without, a key is generated on the first start
// only and returned so it can be printed once; later starts return "".
//
// A bootstrap key an admin revoked stays revoked: with a secret and
// without reinstall, Bootstrap returns ErrBootstrapRevoked and changes
// nothing; reinstall puts the configured secret back.
func (s *Service) Bootstrap(ctx context.Context, secret string, reinstall bool) (generated string, err error) {
	if secret != "" && !access.ValidBootstrapSecret(secret) {
		return "", fmt.Errorf("the bootstrap API key must be at least %d printable ASCII characters without spaces", access.MinBootstrapKeyLen)
	}
	old, err := s.store.Key(ctx, access.BootstrapKeyID)
	switch {
	case err == nil && (secret == "" || old.Matches(secret)) && old.RevokedAt == nil:
		return "", nil // in place
	case err == nil && old.RevokedAt != nil && secret != "" && !reinstall:
		// An admin revoked it: a restart with the configured secret must
		// not undo that.
		return "", ErrBootstrapRevoked
	case err != nil && !errors.Is(err, access.ErrNotFound):
		return "", unavailable(err)
	}
	k := access.Key{ID: access.BootstrapKeyID, Name: "bootstrap admin", Scopes: []string{access.ScopeAdmin}, CreatedAt: s.now().UTC()}
	if secret == "" {
		if err == nil {
			return "", nil // revoked by an admin: leave it so
		}
		secret = access.NewSecret(access.BootstrapKeyID)
		k.Hash = access.HashSecret(secret)
		if err := s.store.CreateKey(ctx, k); errors.Is(err, access.ErrExists) {
			return "", nil // another process bootstrapped first and printed it
		} else if err != nil {
			return "", unavailable(err)
		}
		generated = secret
	} else {
		k.Hash = access.HashSecret(secret)
		if err := s.store.PutKey(ctx, k); err != nil {
			return "", unavailable(err)
		}
	}
	return generated, s.record(ctx, Actor{KeyID: "system"}, contracts.AuditKeyCreated, "", map[string]any{"key_id": k.ID, "name": k.Name, "scopes": k.Scopes})
}

func (s *Service) record(ctx context.Context, by Actor, kind contracts.AuditKind, project string, detail map[string]any, incarnation ...string) error {
	rec := contracts.AuditRecord{
		Time: s.now().UTC(), Kind: kind, Actor: by.KeyID, Project: project, ClientIP: by.ClientIP, Detail: detail,
	}
	if len(incarnation) > 0 {
		rec.ProjectIncarnation = incarnation[0]
	}
	err := s.audit.Record(ctx, rec)
	if err != nil {
		return unavailable(fmt.Errorf("the change is made but its audit record failed: %w", err))
	}
	return nil
}

func (s *Service) storeError(err error, project string) error {
	var ae *access.Error
	switch {
	case errors.As(err, &ae):
		return err
	case errors.Is(err, access.ErrNotFound):
		return ProjectNotFound(project)
	}
	return unavailable(err)
}

func unavailable(err error) error { return fmt.Errorf("%w: %w", ErrUnavailable, err) }
