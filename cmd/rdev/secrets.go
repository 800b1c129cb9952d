package main

import (
	"fmt"
	"log/slog"

	"github.com/rdev-dev/rdev/pkg/contracts/seal"
)

// secretsFlags configure project secrets: the key they are sealed with.
// The API seals with it and the worker opens with it, so every api and
// worker process needs the same file.
type secretsFlags struct {
	SecretsKeyFile string `name:"secrets-key-file" env:"RDEV_SECRETS_KEY_FILE" help:"File holding the 32-byte key project secrets are sealed with (mode 0600; e.g. head -c 32 /dev/urandom). rdev up generates <data-dir>/secrets.key when absent. Without a key, project secrets are disabled (409 secrets_disabled)."`
}

// secretsKey returns the key of path ("" and no default: none, secrets
// disabled). With generate, a missing file is created with a new key.
// The key itself is never logged.
func secretsKey(path string, generate bool, log *slog.Logger) ([]byte, error) {
	if path == "" {
		log.Info("project secrets disabled: no --secrets-key-file")
		return nil, nil
	}
	if !generate {
		key, err := seal.LoadKeyFile(path)
		if err != nil {
			return nil, fmt.Errorf("--secrets-key-file: %w", err)
		}
		return key, nil
	}
	key, created, err := seal.EnsureKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("--secrets-key-file: %w", err)
	}
	if created {
		log.Info("generated the project secrets key; other api and worker processes need a copy (--secrets-key-file)", "path", path)
	}
	return key, nil
}
