// Package seal encrypts project secrets at rest: AES-256-GCM from the
// standard library with a 32-byte key from the configuration (a key file).
// The API seals a value before it stores it in contracts.BucketSecrets,
// and the worker opens it when a job needs it. Like the contracts it
// serves, it depends on the standard library only.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the length of a key: AES-256.
const KeySize = 32

// ErrOpen is returned when a sealed value does not open with the key: it
// was sealed with another key, for another secret, or altered.
var ErrOpen = errors.New("sealed value does not open with this key")

// Box seals and opens values with one key. It is safe for concurrent use.
type Box struct{ aead cipher.AEAD }

// New returns a Box for a KeySize-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: the key must be %d bytes, not %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext bound to aad (which must be given again to
// Open) under a fresh random nonce, and returns nonce then ciphertext.
func (b *Box) Seal(plaintext, aad []byte) []byte {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (Go 1.24+)
	return b.aead.Seal(nonce, nonce, plaintext, aad)
}

// Open decrypts what Seal returned for the same aad, or returns ErrOpen.
func (b *Box) Open(sealed, aad []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n+b.aead.Overhead() {
		return nil, ErrOpen
	}
	out, err := b.aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

// LoadKeyFile reads a key file: exactly KeySize bytes. A file that other
// users may read is refused: the key opens every secret.
func LoadKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("secrets key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets key file %s: mode %04o lets other users read it; chmod 600 it", path, fi.Mode().Perm())
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets key file: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("secrets key file %s: holds %d bytes; it must hold exactly %d random bytes (e.g. head -c %d /dev/urandom)", path, len(key), KeySize, KeySize)
	}
	return key, nil
}

// EnsureKeyFile loads the key file at path, or, when there is none,
// writes a new random key there (mode 0600, its directory created 0700)
// and returns it with created set.
func EnsureKeyFile(path string) (key []byte, created bool, err error) {
	key, err = LoadKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("secrets key file: %w", err)
	}
	key = make([]byte, KeySize)
	_, _ = rand.Read(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another process wrote it first: use that one.
		key, err = LoadKeyFile(path)
		return key, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("secrets key file: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		_ = f.Close()
		return nil, false, fmt.Errorf("secrets key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("secrets key file: %w", err)
	}
	return key, true, nil
}
