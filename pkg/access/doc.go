// Package access holds rdev's rules for who may do what: projects and
// their limits, API keys (stored as hashes, scoped to projects and roles),
// client address checks, and signed stream tokens a browser can carry in a
// URL. The API and the streamer share these rules; the natskv package
// stores projects and keys in the JetStream access bucket.
package access
