// Package k8spod judges a project's pod settings with the parsers
// Kubernetes itself applies to them: resource quantities
// (k8s.io/apimachinery) and image references (distribution/reference), so
// what the API stores is what a pod spec accepts.
package k8spod

import (
	"fmt"

	"github.com/distribution/reference"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/rdev-dev/rdev/pkg/access"
)

// Check returns an *access.Error (KindInvalid, code invalid_pod) naming
// the first field of p that a Kubernetes pod spec would refuse.
func Check(p access.PodSettings) error {
	if p.Image != "" {
		if len(p.Image) > 1024 {
			return invalid("pod.image must be at most 1024 characters")
		}
		if _, err := reference.ParseNormalizedNamed(p.Image); err != nil {
			return invalid(fmt.Sprintf("pod.image %q is not an image reference (e.g. ubuntu:24.04, ghcr.io/acme/ws@sha256:…): %v", p.Image, err))
		}
	}
	for _, q := range []struct{ field, value, example string }{{"cpu", p.CPU, `"2" or "500m"`}, {"memory", p.Memory, `"1Gi" or "512Mi"`}} {
		if q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil || v.Sign() <= 0 {
			return invalid(fmt.Sprintf("pod.%s %q is not a positive Kubernetes quantity, e.g. %s", q.field, q.value, q.example))
		}
	}
	return nil
}

func invalid(msg string) error {
	return &access.Error{Kind: access.KindInvalid, Code: "invalid_pod", Message: msg}
}
