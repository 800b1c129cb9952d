package streamer_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer"
)

// Hundreds of streams watched at once on one streamer are a handful of
// consumers on the output stream, not one each: past SharedFeedAfter the
// live feeds share one. Every client gets every line once, in order, then
// the terminal event, lines written before it joined (history) and after
// (live) alike.
//
// Not parallel: hundreds of streams beside the reconnect storm overload a
// small CI machine and time both out.
func TestManyStreamsShareOneLiveFeed(t *testing.T) { //nolint:paralleltest // see above
	streams := 200
	if testing.Short() {
		streams = 100
	}
	const after, stored, live = 20, 5, 5
	f := setup(t, options{cfg: streamer.Config{Heartbeat: time.Second, SharedFeedAfter: after}})
	jobs := make([]*job, streams)
	for i := range jobs {
		jobs[i] = f.newJob(t)
		jobs[i].event(t, contracts.EventStarted, 0)
		jobs[i].lines(t, 1, stored)
	}
	addr := strings.TrimPrefix(f.base, "http://")
	results := make(chan stormResult, streams)
	var wg sync.WaitGroup
	for _, j := range jobs {
		token := f.signer.Sign(access.StreamResource(j.streamID), time.Now().Add(time.Hour))
		wg.Go(func() { results <- stormClient(addr, j.streamID, token) })
	}
	// Hubs started, not running: on a loaded machine a replay may time
	// out, and its client leaves the hub until it retries.
	await.Within(t, stormWait, "every stream's live feed opened", func() bool { return f.svc.Stats().HubsStarted >= uint64(streams) })
	if n := f.consumers(t); n > after+1 {
		t.Fatalf("%d consumers for %d watched streams, want at most %d own and the shared one", n, streams, after)
	}
	if st := f.svc.Stats(); st.FeedsOwn > after || st.FeedsShared == 0 {
		t.Fatalf("stats %+v: want at most %d own feeds, the rest shared", st, after)
	}

	finishStreams(t, f, jobs, stored, live)
	wg.Wait()
	close(results)
	checkResults(t, results)
	await.Within(t, waitFor, "the streams' hubs gone", func() bool { return f.svc.Stats().Hubs == 0 })
	if st := f.svc.Stats(); st.FeedsOwn != 0 || st.FeedsShared != 0 {
		t.Fatalf("stats %+v: feeds left open", st)
	}
}
