package natsserver

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"
)

// Credentials are the nkey seeds of every role, one file per role in one
// directory: the embedded server admits their public keys, each process
// signs in with its role's seed (nats.NkeyOptionFromSeed, rdev's
// --nats-nkey).
type Credentials struct {
	// Dir holds <role>.nk files, mode 0600, in a directory of mode 0700.
	Dir string
	// Public is each role's public nkey (U…), RoleSystem's included.
	Public map[Role]string
	// CalloutIssuer is the public key (A…) of the account nkey whose seed
	// (CalloutSeedFile) the API signs direct subscribers' user JWTs with:
	// the server's auth callout issuer.
	CalloutIssuer string
}

// CalloutSeedFile is the path of the auth callout issuer's seed.
func (c Credentials) CalloutSeedFile() string { return filepath.Join(c.Dir, "callout.nk") }

// SystemSeedFile is the path of the system user's seed (RoleSystem).
func (c Credentials) SystemSeedFile() string { return c.SeedFile(RoleSystem) }

// SeedFile is the path of role's seed file.
func (c Credentials) SeedFile(r Role) string { return filepath.Join(c.Dir, string(r)+".nk") }

// Users are the embedded server's users: each role's public key with its
// Permissions, and the system user (RoleSystem).
func (c Credentials) Users() []User {
	var out []User
	for _, r := range append(Roles(), RoleSystem) {
		out = append(out, User{Role: r, NKey: c.Public[r]})
	}
	return out
}

// EnsureCredentials reads the seeds in dir, generating those missing (the
// first start), and returns them. dir and the files are made private to
// this user: a seed is a password.
func EnsureCredentials(dir string) (Credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Credentials{}, fmt.Errorf("natsserver: credentials directory: %w", err)
	}
	// MkdirAll leaves an existing directory's mode alone.
	if err := os.Chmod(dir, 0o700); err != nil {
		return Credentials{}, fmt.Errorf("natsserver: credentials directory: %w", err)
	}
	c := Credentials{Dir: dir, Public: map[Role]string{}}
	for _, r := range append(Roles(), RoleSystem) {
		var err error
		if c.Public[r], err = ensureSeed(c.SeedFile(r), nkeys.CreateUser); err != nil {
			return Credentials{}, fmt.Errorf("natsserver: %s credentials: %w", r, err)
		}
	}
	var err error
	if c.CalloutIssuer, err = ensureSeed(c.CalloutSeedFile(), nkeys.CreateAccount); err != nil {
		return Credentials{}, fmt.Errorf("natsserver: auth callout issuer: %w", err)
	}
	return c, nil
}

// ensureSeed reads the seed at path, writing one made by create when there
// is none, and returns its public key.
func ensureSeed(path string, create func() (nkeys.KeyPair, error)) (string, error) {
	seed, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		seed, err = newSeed(path, create)
	}
	if err != nil {
		return "", err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return "", err
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return kp.PublicKey()
}

func newSeed(path string, create func() (nkeys.KeyPair, error)) ([]byte, error) {
	kp, err := create()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	// O_EXCL: two starts racing on a fresh directory must not each write
	// a different seed.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(seed); err != nil {
		f.Close()
		return nil, err
	}
	return seed, f.Close()
}
