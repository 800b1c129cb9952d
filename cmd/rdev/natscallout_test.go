package main

import "testing"

// An nkey file is read as nk writes it (-pubout: the seed, then the
// public key) or as a bare seed.
func TestSeedLine(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"SXSEED\nXPUBLIC\n": "SXSEED",
		"  SASEED  \n":      "SASEED",
		"\nSASEED\r\nAPUB":  "SASEED",
		"SASEED":            "SASEED",
	} {
		if got := string(seedLine([]byte(in))); got != want {
			t.Errorf("seedLine(%q) = %q, want %q", in, got, want)
		}
	}
}
