// Package cachetest is the conformance suite of the cache port: every
// adapter (in-memory, Redis) runs Run and so keeps the same contract.
// TTLs are real time (Redis expires keys by its own clock) and short.
package cachetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/api/internal/cache"
)

// Run runs the conformance suite. newCache is called once per subtest;
// caches may share a backend (each subtest uses its own keys) but
// Invalidate may clear a shared one, so give each call its own namespace
// (e.g. a prefix) when they do.
func Run(t *testing.T, newCache func(t *testing.T) cache.Backend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, c cache.Backend)
	}{
		{"MissIsNilFalseNil", testMiss},
		{"SetGetOverwrite", testSetGetOverwrite},
		{"BinaryAndEmptyValues", testBinaryAndEmpty},
		{"ValuesAreCopies", testValuesAreCopies},
		{"DeleteOneAndMany", testDelete},
		{"TTLExpiry", testTTLExpiry},
		{"InvalidTTL", testInvalidTTL},
		{"Invalidate", testInvalidate},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newCache(t))
		})
	}
}

func key(t *testing.T, name string) string { return t.Name() + "/" + rand.Text()[:8] + "/" + name }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustSet(t *testing.T, c cache.Cache, k string, v []byte, ttl time.Duration) {
	t.Helper()
	if err := c.Set(ctx(t), k, v, ttl); err != nil {
		t.Fatalf("Set(%q): %v", k, err)
	}
}

func mustHit(t *testing.T, c cache.Cache, k string, want []byte) {
	t.Helper()
	got, ok, err := c.Get(ctx(t), k)
	if err != nil || !ok || !bytes.Equal(got, want) || got == nil {
		t.Fatalf("Get(%q) = %q, %v, %v; want hit %q", k, got, ok, err, want)
	}
}

func mustMiss(t *testing.T, c cache.Cache, k string) {
	t.Helper()
	got, ok, err := c.Get(ctx(t), k)
	if err != nil || ok || got != nil {
		t.Fatalf("Get(%q) = %q, %v, %v; want (nil, false, nil)", k, got, ok, err)
	}
}

func testMiss(t *testing.T, c cache.Backend) {
	mustMiss(t, c, key(t, "never-set"))
	if err := c.Delete(ctx(t), key(t, "never-set")); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if err := c.Delete(ctx(t)); err != nil {
		t.Fatalf("Delete of no keys: %v", err)
	}
}

func testSetGetOverwrite(t *testing.T, c cache.Backend) {
	k := key(t, "k")
	mustSet(t, c, k, []byte("one"), time.Minute)
	mustHit(t, c, k, []byte("one"))
	mustSet(t, c, k, []byte("two"), time.Minute)
	mustHit(t, c, k, []byte("two"))
}

func testBinaryAndEmpty(t *testing.T, c cache.Backend) {
	bin := make([]byte, 64<<10)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	bin[0], bin[1] = 0, 0xff
	kb, ke := key(t, "bin"), key(t, "empty")
	mustSet(t, c, kb, bin, time.Minute)
	mustHit(t, c, kb, bin)
	mustSet(t, c, ke, nil, time.Minute)
	mustHit(t, c, ke, []byte{})
}

func testValuesAreCopies(t *testing.T, c cache.Backend) {
	k := key(t, "k")
	v := []byte("abc")
	mustSet(t, c, k, v, time.Minute)
	v[0] = 'X'
	got, _, _ := c.Get(ctx(t), k)
	got[1] = 'Y'
	mustHit(t, c, k, []byte("abc"))
}

func testDelete(t *testing.T, c cache.Backend) {
	a, b, d, keep := key(t, "a"), key(t, "b"), key(t, "d"), key(t, "keep")
	for _, k := range []string{a, b, d, keep} {
		mustSet(t, c, k, []byte(k), time.Minute)
	}
	if err := c.Delete(ctx(t), a); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	mustMiss(t, c, a)
	if err := c.Delete(ctx(t), b, d, key(t, "missing")); err != nil {
		t.Fatalf("Delete of several keys: %v", err)
	}
	mustMiss(t, c, b)
	mustMiss(t, c, d)
	mustHit(t, c, keep, []byte(keep))
}

// An entry is a hit right after Set and a miss within a bounded time after
// its TTL; an entry with a long TTL set at the same time is unaffected.
func testTTLExpiry(t *testing.T, c cache.Backend) {
	const ttl = 300 * time.Millisecond
	short, long := key(t, "short"), key(t, "long")
	set := time.Now()
	mustSet(t, c, short, []byte("s"), ttl)
	mustSet(t, c, long, []byte("l"), time.Minute)
	if time.Since(set) < ttl/2 {
		mustHit(t, c, short, []byte("s"))
	}
	deadline := set.Add(ttl + 2*time.Second)
	for {
		_, ok, err := c.Get(ctx(t), short)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("entry with ttl %v still present after %v", ttl, time.Since(set))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if el := time.Since(set); el < ttl-5*time.Millisecond {
		t.Fatalf("entry with ttl %v gone after only %v", ttl, el)
	}
	mustHit(t, c, long, []byte("l"))
}

func testInvalidTTL(t *testing.T, c cache.Backend) {
	for _, ttl := range []time.Duration{0, -time.Second} {
		if err := c.Set(ctx(t), key(t, "k"), []byte("v"), ttl); !errors.Is(err, cache.ErrInvalidTTL) {
			t.Fatalf("Set with ttl %v: %v, want ErrInvalidTTL", ttl, err)
		}
	}
}

// Invalidate drops every entry; entries set after it work normally.
func testInvalidate(t *testing.T, c cache.Backend) {
	keys := make([]string, 50)
	for i := range keys {
		keys[i] = key(t, fmt.Sprint(i))
		mustSet(t, c, keys[i], []byte("old"), time.Minute)
	}
	if err := c.Invalidate(ctx(t)); err != nil {
		t.Fatalf("Invalidate: %v", err)
	}
	for _, k := range keys {
		mustMiss(t, c, k)
	}
	mustSet(t, c, keys[0], []byte("new"), time.Minute)
	mustHit(t, c, keys[0], []byte("new"))
}

// Concurrent writers and readers of a few keys only ever see whole values
// that were written, and a Delete by one caller is seen by the others.
func testConcurrent(t *testing.T, c cache.Backend) {
	keys := []string{key(t, "a"), key(t, "b"), key(t, "c")}
	valid := map[string]bool{}
	for w := range 8 {
		valid[fmt.Sprintf("writer-%d-%s", w, bytes.Repeat([]byte("x"), w*100))] = true
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 8 {
		v := []byte(fmt.Sprintf("writer-%d-%s", w, bytes.Repeat([]byte("x"), w*100)))
		wg.Go(func() {
			for i := range 100 {
				k := keys[i%len(keys)]
				if err := c.Set(t.Context(), k, v, time.Minute); err != nil {
					errs <- err
					return
				}
				got, ok, err := c.Get(t.Context(), keys[(i+1)%len(keys)])
				if err != nil {
					errs <- err
					return
				}
				if ok && !valid[string(got)] {
					errs <- fmt.Errorf("read a value never written: %q", got)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := c.Delete(ctx(t), keys...); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	for _, k := range keys {
		mustMiss(t, c, k)
	}
}
