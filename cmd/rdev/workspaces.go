package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
)

// jobWorkspaces returns where the workspaces of jobs run as another user
// live. They stay under the data directory (made 0711: enterable, not
// listable) when the job user can reach it; when a directory above it is
// private (a clone under /root, run as root), they move to a directory of
// their own under the system's temporary directory rather than the worker
// refusing to start, so the quick start works wherever it is cloned. moved
// says which.
func jobWorkspaces(workspaces string) (dir string, moved bool, err error) {
	abs, err := filepath.Abs(workspaces)
	if err != nil {
		return "", false, err
	}
	dataDir := filepath.Dir(abs)
	if reachable(filepath.Dir(dataDir)) {
		if err := os.MkdirAll(dataDir, 0o711); err != nil {
			return "", false, err
		}
		return abs, false, os.Chmod(dataDir, 0o711)
	}
	sum := sha256.Sum256([]byte(dataDir))
	return filepath.Join(os.TempDir(), "rdev-workspaces-"+hex.EncodeToString(sum[:6])), true, nil
}

// reachable reports whether every directory from dir up to the root may
// be entered by other users (o+x).
func reachable(dir string) bool {
	for ; ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if dir == filepath.Dir(dir) {
			return true
		}
	}
}
