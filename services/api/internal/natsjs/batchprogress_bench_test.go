package natsjs_test

import (
	"fmt"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// BenchmarkBatchProgressCounts is the counts of a 10,000-job batch read
// while it drains: 10 jobs end between reads (what a poller sees on a
// busy machine). go test -run '^$' -bench BatchProgressCounts
// -cpuprofile cpu.out ./internal/natsjs shows where a read goes.
func BenchmarkBatchProgressCounts(b *testing.B) {
	const n, step = 10_000, 10
	p := progressSetup(b, n)
	bp := newProgress(b, p, 0)
	if _, err := bp.Counts(p.ctx, p.b); err != nil {
		b.Fatal(err)
	}
	next := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		for range step {
			p.set(b, fmt.Sprintf("J%d", next%n), contracts.StatusSucceeded, contracts.EventSucceeded, 1)
			next++
		}
		b.StartTimer()
		if _, err := bp.Counts(p.ctx, p.b); err != nil {
			b.Fatal(err)
		}
	}
}
