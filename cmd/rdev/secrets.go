package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/rdev-dev/rdev/pkg/contracts/seal"
)

// secretsFlags configure project secrets: the key they are sealed with.
// The API seals with it and the worker and the notifier open with it, so
// every api, worker and notifier process needs the same key.
type secretsFlags struct {
	SecretsKeyFile string `name:"secrets-key-file" env:"RDEV_SECRETS_KEY_FILE" help:"File holding the 32-byte key project secrets and webhook signing secrets are sealed with (mode 0600; e.g. head -c 32 /dev/urandom). rdev up generates <data-dir>/secrets.key when absent. Without a key, project secrets are disabled (409 secrets_disabled), and webhooks too."`
	// SecretsKey is a secret: never logged.
	SecretsKey string `name:"secrets-key" env:"RDEV_SECRETS_KEY" help:"The key of --secrets-key-file given directly, in base64 (for an environment variable from a secret; rdev keygen prints one); the file wins when both are set."`
}

// given reports whether the flags name a key.
func (f secretsFlags) given() bool { return f.SecretsKeyFile != "" || f.SecretsKey != "" }

// key returns the key the flags give: the file's, else --secrets-key's,
// else none (nil: secrets disabled). With generate, a missing file is
// created with a new key. The key itself is never logged.
func (f secretsFlags) key(generate bool, log *slog.Logger) ([]byte, error) {
	switch {
	case f.SecretsKeyFile == "" && f.SecretsKey == "":
		log.Info("project secrets disabled: no --secrets-key-file or --secrets-key")
		return nil, nil
	case f.SecretsKeyFile == "":
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(f.SecretsKey))
		if err != nil || len(key) != seal.KeySize {
			// The value is not quoted: a near miss of a key is still a secret.
			return nil, errors.New("--secrets-key (RDEV_SECRETS_KEY): want the base64 of 32 random bytes (rdev keygen prints one; head -c 32 /dev/urandom | base64)")
		}
		return key, nil
	case !generate:
		key, err := seal.LoadKeyFile(f.SecretsKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--secrets-key-file: %w", err)
		}
		return key, nil
	}
	key, created, err := seal.EnsureKeyFile(f.SecretsKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--secrets-key-file: %w", err)
	}
	if created {
		log.Info("generated the project secrets key; other api, worker and notifier processes need a copy (--secrets-key-file)", "path", f.SecretsKeyFile)
	}
	return key, nil
}

// upSecrets are rdev up's: with no key given, <dataDir>/secrets.key, which
// rdev up creates when absent.
func upSecrets(f secretsFlags, dataDir string) secretsFlags {
	if !f.given() {
		f.SecretsKeyFile = filepath.Join(dataDir, "secrets.key")
	}
	return f
}
