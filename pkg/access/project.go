package access

import (
	"strings"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// RateLimit allows at most Requests in any sliding window of
// WindowSeconds; the API shows it as it is stored.
type RateLimit = contracts.RateLimit

func validateRateLimit(r *RateLimit, field string) error {
	if r == nil {
		return nil
	}
	if r.Requests < 1 || r.Requests > 1_000_000 || r.WindowSeconds < 1 || r.WindowSeconds > 86_400 {
		return errorf(KindInvalid, "invalid_rate_limit", "%s needs requests between 1 and 1000000 and window_seconds between 1 and 86400", field)
	}
	return nil
}

// PodSettings tune a project's workspace pod for the Kubernetes executor.
type PodSettings = contracts.PodSettings

// Project is a tenant: jobs, streams, keys and audit records belong to
// one. It is stored in contracts.BucketAccess as the API shows it.
type Project = contracts.Project

// ProjectPatch holds the fields a change sets; absent (nil) fields stay as
// they are. A rate_limit with zero requests removes the limit, and an empty
// pod object the pod settings.
type ProjectPatch struct {
	Name              *string             `json:"name"`
	AllowedIPs        *[]string           `json:"allowed_ips"`
	DefaultPriority   *contracts.Priority `json:"default_priority"`
	RateLimit         *RateLimit          `json:"rate_limit"`
	MaxConcurrentJobs *int                `json:"max_concurrent_jobs"`
	Pod               *PodSettings        `json:"pod"`
}

// Apply sets the patch's fields on p and checks the result.
func (pp ProjectPatch) Apply(p *Project) error {
	if pp.Name != nil {
		p.Name = *pp.Name
	}
	if pp.AllowedIPs != nil {
		p.AllowedIPs = *pp.AllowedIPs
	}
	if pp.DefaultPriority != nil {
		p.DefaultPriority = *pp.DefaultPriority
	}
	if pp.RateLimit != nil {
		p.RateLimit = pp.RateLimit
		if pp.RateLimit.Requests == 0 {
			p.RateLimit = nil
		}
	}
	if pp.MaxConcurrentJobs != nil {
		p.MaxConcurrentJobs = *pp.MaxConcurrentJobs
	}
	if pp.Pod != nil {
		p.Pod = pp.Pod
		if *pp.Pod == (PodSettings{}) {
			p.Pod = nil
		}
	}
	return NormalizeProject(p)
}

// NormalizeProject checks p and brings its fields to canonical form.
func NormalizeProject(p *Project) error {
	if !contracts.ValidProjectID(p.ID) {
		return errorf(KindInvalid, "invalid_project", "project id %q must be a DNS label: 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit", p.ID)
	}
	p.Name = strings.TrimSpace(p.Name)
	if p.Name == "" {
		p.Name = p.ID
	}
	if err := CheckName("name", p.Name); err != nil {
		return err
	}
	ips, err := ParseAllowedIPs(p.AllowedIPs)
	if err != nil {
		return err
	}
	if len(ips) > 100 {
		return errorf(KindInvalid, "invalid_allowed_ips", "at most 100 allowed IP ranges")
	}
	p.AllowedIPs = ips
	if _, err := contracts.ParsePriority(string(p.DefaultPriority)); err != nil {
		return errorf(KindInvalid, "invalid_priority", "default_priority: %v", err)
	}
	if err := validateRateLimit(p.RateLimit, "rate_limit"); err != nil {
		return err
	}
	if p.MaxConcurrentJobs < 0 || p.MaxConcurrentJobs > 10_000 {
		return errorf(KindInvalid, "invalid_max_concurrent_jobs", "max_concurrent_jobs must be between 0 (no bound) and 10000")
	}
	return nil
}
