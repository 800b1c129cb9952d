package contracts

import "time"

// RateLimit allows at most Requests in any sliding window of
// WindowSeconds.
type RateLimit struct {
	// Requests is the most requests in a window.
	Requests int `json:"requests"`
	// WindowSeconds is the window length.
	WindowSeconds int `json:"window_seconds"`
}

// Window returns the window as a duration.
func (r RateLimit) Window() time.Duration { return time.Duration(r.WindowSeconds) * time.Second }

// PodSettings tune a project's workspace pod for the Kubernetes executor.
type PodSettings struct {
	// Image replaces the pod template's image.
	Image string `json:"image,omitempty"`
	// CPU is the container's CPU limit, e.g. "2" or "500m".
	CPU string `json:"cpu,omitempty"`
	// Memory is the container's memory limit, e.g. "1Gi".
	Memory string `json:"memory,omitempty"`
}

// Project is the body of GET /v1/projects/{project} and of a project's
// create and update: a tenant, to which jobs, streams, keys and audit
// records belong.
type Project struct {
	// ID is a DNS label; it appears in URLs and subjects.
	ID string `json:"id"`
	// Name is for people.
	Name string `json:"name"`
	// AllowedIPs are the CIDRs requests about the project may come from;
	// empty allows any address.
	AllowedIPs []string `json:"allowed_ips"`
	// DefaultPriority applies to jobs that name none; "" means normal.
	DefaultPriority Priority `json:"default_priority,omitempty"`
	// RateLimit bounds requests about the project, from all keys together.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// MaxConcurrentJobs bounds the project's running jobs; 0 is no bound.
	MaxConcurrentJobs int `json:"max_concurrent_jobs"`
	// Pod tunes the project's workspace pod.
	Pod *PodSettings `json:"pod,omitempty"`
	// Incarnation is a unique id given when the project is created: jobs,
	// streams, batches, audit records and stream tokens record it, so a
	// project deleted and created again under the same id (another
	// incarnation) sees nothing of the old one. Empty for projects
	// created before incarnations.
	Incarnation string `json:"incarnation,omitempty"`
	// CreatedAt is when the project was created.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is when it last changed.
	UpdatedAt time.Time `json:"updated_at"`
}

// ProjectRequest is the body of POST /v1/projects (admin).
type ProjectRequest struct {
	// ID is the new project's id, a DNS label.
	ID string `json:"id"`
	// Name is for people; "" takes the id.
	Name string `json:"name,omitempty"`
	// AllowedIPs are CIDRs or addresses; empty allows any.
	AllowedIPs []string `json:"allowed_ips,omitempty"`
	// DefaultPriority applies to jobs that name none.
	DefaultPriority Priority `json:"default_priority,omitempty"`
	// RateLimit bounds requests about the project.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// MaxConcurrentJobs bounds the project's running jobs; 0 is no bound.
	MaxConcurrentJobs int `json:"max_concurrent_jobs,omitempty"`
	// Pod tunes the project's workspace pod.
	Pod *PodSettings `json:"pod,omitempty"`
}

// ProjectPatch is the body of PATCH /v1/projects/{project} (admin):
// absent (nil) fields stay as they are. A rate_limit with zero requests
// removes the limit, and an empty pod object the pod settings.
type ProjectPatch struct {
	// Name is for people.
	Name *string `json:"name,omitempty"`
	// AllowedIPs replaces the allowed CIDRs.
	AllowedIPs *[]string `json:"allowed_ips,omitempty"`
	// DefaultPriority replaces the default priority.
	DefaultPriority *Priority `json:"default_priority,omitempty"`
	// RateLimit replaces the rate limit.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// MaxConcurrentJobs replaces the bound on running jobs.
	MaxConcurrentJobs *int `json:"max_concurrent_jobs,omitempty"`
	// Pod replaces the pod settings.
	Pod *PodSettings `json:"pod,omitempty"`
}

// ProjectList is the body of GET /v1/projects: the projects the caller's
// key may see.
type ProjectList struct {
	// Projects are the projects, never null.
	Projects []Project `json:"projects"`
}

// KeyRequest is the body of POST /v1/keys (admin).
type KeyRequest struct {
	// Name is for people.
	Name string `json:"name"`
	// Scopes say what the key may do: "admin", "read" or
	// "project:<id>:<role>".
	Scopes []string `json:"scopes"`
	// AllowedIPs are the CIDRs the key may be used from; empty allows any.
	AllowedIPs []string `json:"allowed_ips,omitempty"`
	// RateLimit bounds the key's requests; nil takes the server default.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// ExpiresAt is when the key stops working; nil never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Key is the body of the key endpoints: a key without its hash, and with
// its secret only in the reply that created it.
type Key struct {
	// ID is the key's public id.
	ID string `json:"id"`
	// Key is the secret, shown once: in the reply of POST /v1/keys.
	Key string `json:"key,omitempty"`
	// Name is for people.
	Name string `json:"name"`
	// Scopes say what the key may do.
	Scopes []string `json:"scopes"`
	// AllowedIPs are the CIDRs the key may be used from; empty allows any.
	AllowedIPs []string `json:"allowed_ips"`
	// RateLimit bounds the key's requests; absent takes the server default.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// ExpiresAt is when the key stops working; absent never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// RevokedAt is when the key was revoked; absent while it is valid.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// CreatedAt is when the key was created.
	CreatedAt time.Time `json:"created_at"`
	// LastUsedAt is when the key last authenticated a request (updated at
	// most once a minute).
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// KeyList is the body of GET /v1/keys (admin).
type KeyList struct {
	// Keys are every key, never null.
	Keys []Key `json:"keys"`
}

// SecretRequest is the body of PUT /v1/projects/{project}/secrets/{name}
// (admin).
type SecretRequest struct {
	// Value is the secret; required.
	Value *string `json:"value"`
}

// SecretList is the body of GET /v1/projects/{project}/secrets (admin):
// names and times, never values.
type SecretList struct {
	// Secrets are the project's secrets, never null.
	Secrets []SecretInfo `json:"secrets"`
}

// AuditPage is the body of GET /v1/audit and GET
// /v1/projects/{project}/audit: records oldest first.
type AuditPage struct {
	// Records are the page's records, never null.
	Records []AuditRecord `json:"records"`
	// NextCursor, when set, is the cursor query parameter of the next page.
	NextCursor string `json:"next_cursor,omitempty"`
}
