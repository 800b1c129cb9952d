package streamer

import (
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/follow"
	"github.com/rdev-dev/rdev/services/streamer/internal/sse"
)

// BenchmarkSinkSend isolates what BenchmarkHubFanOut spends in the sinks:
// one entry written by 1,000 clients' sinks, one after the other on one
// goroutine, then flushed. "per-client" is an entry read for one client
// (replayed; every entry before entries were encoded once per stream):
// each sink encodes it. "shared" is a live entry, with a new entry.Shared
// per op as the hub makes: the first sink encodes it, the others copy the
// frame. Both run in the same binary, so they compare on the same machine
// at the same time.
func BenchmarkSinkSend(b *testing.B) {
	const clients = 1000
	plain, claudeLine := benchLines()
	for _, format := range []struct {
		name   string
		data   []byte
		claude bool
	}{{"raw", plain, false}, {"claude", claudeLine, true}} {
		sinks := make([]follow.Sink, clients)
		for i := range sinks {
			k := sink{sse.NewWriter(discard{}, time.Minute)}
			sinks[i] = k
			if format.claude {
				sinks[i] = claudeSink{k}
			}
		}
		for _, shared := range []bool{false, true} {
			name := format.name + "/per-client"
			if shared {
				name = format.name + "/shared"
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for n := range b.N {
					e := entry.Entry{StreamSeq: uint64(n + 1), Kind: entry.Line, Line: uint64(n + 1), Data: format.data}
					if shared {
						e.Shared = new(entry.Shared)
					}
					for _, k := range sinks {
						if err := k.Send(e); err != nil {
							b.Fatal(err)
						}
						if err := k.Flush(); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/clients, "ns/delivery")
			})
		}
	}
}
