package seal_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts/seal"
)

func TestSealOpen(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, seal.KeySize)
	box, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed := box.Seal([]byte("s3cret-value"), []byte("p/a"))
	if bytes.Contains(sealed, []byte("s3cret-value")) {
		t.Fatal("sealed value holds the plaintext")
	}
	if again := box.Seal([]byte("s3cret-value"), []byte("p/a")); bytes.Equal(again, sealed) {
		t.Fatal("two seals of one value are equal: the nonce is not fresh")
	}
	got, err := box.Open(sealed, []byte("p/a"))
	if err != nil || string(got) != "s3cret-value" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := box.Open(sealed, []byte("p/b")); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("Open with other aad = %v, want ErrOpen", err)
	}
	other, _ := seal.New(bytes.Repeat([]byte{8}, seal.KeySize))
	if _, err := other.Open(sealed, []byte("p/a")); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("Open with other key = %v, want ErrOpen", err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := box.Open(sealed, []byte("p/a")); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("Open of altered value = %v, want ErrOpen", err)
	}
	if _, err := box.Open([]byte{1, 2}, nil); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("Open of short value = %v, want ErrOpen", err)
	}
	if _, err := seal.New(key[:16]); err == nil {
		t.Fatal("a 16-byte key was accepted")
	}
}

func TestKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "secrets.key")
	key, created, err := seal.EnsureKeyFile(path)
	if err != nil || !created || len(key) != seal.KeySize {
		t.Fatalf("EnsureKeyFile = %d bytes, %v, %v", len(key), created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	again, created, err := seal.EnsureKeyFile(path)
	if err != nil || created || !bytes.Equal(again, key) {
		t.Fatalf("second EnsureKeyFile = %v, %v; want the same key", created, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := seal.LoadKeyFile(path); err == nil {
		t.Fatal("a world-readable key file was accepted")
	}
	short := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(short, []byte("too short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := seal.LoadKeyFile(short); err == nil {
		t.Fatal("a short key file was accepted")
	}
}
