package contracts

import (
	"regexp"
	"time"
)

// Project secrets: values a job gets in its environment by reference
// (Job.SecretEnv), so they never travel in a job message, an event, a dead
// letter or an audit record. The API seals each value (package seal) and
// stores the SealedSecret in BucketSecrets; the worker opens it when it
// starts the command and hands the value to the executor only.
const (
	// BucketSecrets is the key-value bucket holding SealedSecrets under
	// SecretKey(project, name).
	BucketSecrets = "rdev_secrets"
	// MaxSecretBytes bounds a secret's value.
	MaxSecretBytes = 32 << 10
	// Redacted replaces the value of a plain env variable in dead letters
	// and audit records.
	Redacted = "***"
)

var secretNamePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidSecretName reports whether s may name a secret: 1 to 64 letters,
// digits, '_' or '-' (safe as a key token).
func ValidSecretName(s string) bool { return secretNamePattern.MatchString(s) }

// SecretKey is the BucketSecrets key of a project's secret.
func SecretKey(project, name string) string { return "secret." + project + "." + name }

// SecretKeyPrefix is the prefix of every BucketSecrets key of a project.
func SecretKeyPrefix(project string) string { return "secret." + project + "." }

// SealedSecret is a project secret as stored: its value only sealed.
type SealedSecret struct {
	// V is the message version (Version).
	V int `json:"v"`
	// Project and Name say whose secret it is; they are also the
	// additional data the value is sealed with, so a sealed value moved
	// under another key does not open.
	Project string `json:"project"`
	Name    string `json:"name"`
	// Sealed is the value sealed with AES-256-GCM (nonce, then ciphertext
	// and tag); see package seal.
	Sealed []byte `json:"sealed"`
	// UpdatedAt is when the value was last set.
	UpdatedAt time.Time `json:"updated_at"`
	// ProjectIncarnation is the incarnation of Project the secret was set
	// in; a project deleted and created again does not see it.
	ProjectIncarnation string `json:"project_incarnation,omitempty"`
}

// SecretAAD is the additional authenticated data a secret's value is
// sealed with: it binds the ciphertext to its project and name.
func SecretAAD(project, name string) []byte {
	return []byte("rdev-secret\x00" + project + "\x00" + name)
}

// RedactEnv returns env with every value replaced by Redacted, for records
// that keep which variables a job set but must not keep their values.
func RedactEnv(env map[string]string) map[string]string {
	if env == nil {
		return nil
	}
	out := make(map[string]string, len(env))
	for k := range env {
		out[k] = Redacted
	}
	return out
}

// SecretInfo is what the API shows of a project secret
// (GET /v1/projects/{p}/secrets): never its value.
type SecretInfo struct {
	// Name names the secret within its project.
	Name string `json:"name"`
	// UpdatedAt is when its value was last set.
	UpdatedAt time.Time `json:"updated_at"`
}
