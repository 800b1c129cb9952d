package cache

import (
	"fmt"
	"testing"
	"time"
)

// The memory cache stays within its bound however many keys are written.
// Otter evicts in batches; CleanUp runs what is pending, so the bound is
// checked exactly.
func TestMemoryBounded(t *testing.T) {
	t.Parallel()
	m := NewMemory(100)
	for i := range 10_000 {
		if err := m.Set(t.Context(), fmt.Sprint(i), []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	m.c.CleanUp()
	if n := m.c.EstimatedSize(); n > 100 {
		t.Fatalf("%d of 10000 entries still cached with a bound of 100", n)
	}
}
