package natsjs

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Bounds of a project's event feed.
const (
	// feedKept is the most events a feed keeps (about 3 MB): a record
	// further behind reads from the stream. Below progressMaxTail, so
	// that no read of a feed needs to skip.
	feedKept = 8192
	// feedsMax bounds the projects with a feed; the others' reads go to
	// the stream.
	feedsMax = 16
	// feedIdle is how long a feed nobody reads is kept.
	feedIdle = 30 * time.Second
	// feedCatchUp bounds the wait for the events the server has sent a
	// feed; past it the read goes to the stream.
	feedCatchUp = 250 * time.Millisecond
)

// errFeedBehind is a feed that could not show it holds every event
// stored before a read (a reset consumer, events still on the way past
// feedCatchUp, a failed consumer): the read goes to the stream instead.
var errFeedBehind = errors.New("event feed behind")

// eventFeed is one project's lifecycle events as they are stored, read
// through an ordered consumer and kept in memory for the counts of the
// project's followed batches. The reads it spares are batched direct
// gets, which the server answers by first counting the messages of the
// filter after the start: with a wildcard filter, a walk over every event
// subject of the project in the stream's last block (a job has one per
// event type), twice per read while the stream grows. Under a polled
// 10,000-job drain that walk was a quarter of `rdev up`'s CPU.
//
// A read must see every event stored before it began. The consumer's
// info says which those are, cheaply: the ones it sent and the ones
// pending; the read waits until the last of them has arrived. But the
// server counts a stored message as pending only once it has signalled
// the stream's consumers, which it does after acknowledging the
// publisher: an event acknowledged just before the read can be missing
// from the info. So the read then asks the stream for its last sequence
// and for the first event after the last one the feed holds, and waits
// for each such event stored up to that sequence.
type eventFeed struct {
	cons   jetstream.Consumer
	cc     jetstream.ConsumeContext
	stream jetstream.Stream
	filter string

	mu        sync.Mutex
	from      uint64      // the feed holds every event at or after from
	events    []directMsg // in stream order
	consumer  string      // the consumer that sent the last event
	delivered uint64      // that event's consumer sequence
	arrived   chan struct{}
	failed    bool
	usedAt    time.Time
}

// openEventFeed starts a feed of project's events stored from sequence
// from.
func openEventFeed(ctx context.Context, js jetstream.JetStream, project string, from uint64, now time.Time) (*eventFeed, error) {
	cons, err := js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{contracts.SubjectProjectEvents(project)},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: feedIdle,
		// Past these the feed fails, and the next read starts another.
		MaxResetAttempts: 5,
	})
	if err != nil {
		return nil, err
	}
	stream, err := js.Stream(ctx, contracts.StreamOutput)
	if err != nil {
		return nil, err
	}
	f := &eventFeed{cons: cons, stream: stream, filter: contracts.SubjectProjectEvents(project), from: from,
		arrived: make(chan struct{}), usedAt: now}
	f.cc, err = cons.Consume(f.receive, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrOrderedConsumerReset) {
			return // the ordered consumer makes a new one and goes on
		}
		f.mu.Lock()
		f.failed = true
		f.mu.Unlock()
	}))
	if err != nil {
		return nil, err
	}
	return f, nil
}

// receive keeps one event.
func (f *eventFeed) receive(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.consumer, f.delivered = md.Consumer, md.Sequence.Consumer
	defer func() {
		close(f.arrived)
		f.arrived = make(chan struct{})
	}()
	if n := len(f.events); n > 0 && md.Sequence.Stream <= f.events[n-1].seq {
		return // sent again by a new consumer after a reset
	}
	if len(f.events) >= feedKept {
		// Keep the newer half, in an array of its own so that the old
		// one is freed once no read holds it.
		keep := slices.Clone(f.events[len(f.events)-feedKept/2:])
		f.from, f.events = keep[0].seq, keep
	}
	f.events = append(f.events, directMsg{seq: md.Sequence.Stream, data: m.Data()})
}

// after returns the events stored after sequence seq, once the feed
// holds every event stored before the call. errFeedBehind says to read
// the stream instead.
func (f *eventFeed) after(ctx context.Context, seq uint64, now time.Time) ([]directMsg, error) {
	f.mu.Lock()
	covered := !f.failed && seq+1 >= f.from
	f.mu.Unlock()
	if !covered {
		return nil, errFeedBehind
	}
	// The stream's last sequence bounds the check below; asked at once,
	// it costs the read no round trip of its own.
	type lastSeq struct {
		seq uint64
		err error
	}
	streamEnd := make(chan lastSeq, 1)
	go func() {
		si, err := f.stream.Info(ctx)
		if err != nil {
			streamEnd <- lastSeq{err: err}
			return
		}
		streamEnd <- lastSeq{seq: si.State.LastSeq}
	}()
	info, err := f.cons.Info(ctx)
	end := <-streamEnd
	if err != nil || end.err != nil {
		return nil, errFeedBehind
	}
	// The consumer sends in stream order and numbers what it sends: the
	// events it counted are those it sent and the pending ones, which are
	// the next it sends, before any stored later.
	last := info.Delivered.Consumer + info.NumPending
	wait := time.NewTimer(feedCatchUp)
	defer wait.Stop()
	if err := f.await(ctx, wait.C, func() bool { return last == 0 || (f.consumer == info.Name && f.delivered >= last) }); err != nil {
		return nil, err
	}
	// Those not yet counted (see eventFeed): every event stored up to the
	// stream's last sequence when the read began, one direct get each
	// beyond the first, which finds none near the end of the stream.
	for {
		next := f.held() + 1
		if next > end.seq {
			break
		}
		m, err := f.stream.GetMsg(ctx, next, jetstream.WithGetMsgSubject(f.filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && m.Sequence > end.seq) {
			break
		}
		if err != nil {
			return nil, errFeedBehind
		}
		if err := f.await(ctx, wait.C, func() bool { return len(f.events) > 0 && f.events[len(f.events)-1].seq >= m.Sequence }); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed || seq+1 < f.from {
		return nil, errFeedBehind
	}
	// Only a feed that serves reads counts as used: one that keeps
	// failing them goes idle and makes way for another.
	f.usedAt = now
	i, _ := slices.BinarySearchFunc(f.events, seq+1, func(m directMsg, s uint64) int { return cmp.Compare(m.seq, s) })
	return f.events[i:], nil
}

// held is the stream sequence of the last event the feed holds, or the
// one before the first it was opened to hold.
func (f *eventFeed) held() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.events); n > 0 {
		return f.events[n-1].seq
	}
	return f.from - 1
}

// await waits until done, called with f.mu held, reports true. It fails
// with errFeedBehind when the feed fails or expires fires first.
func (f *eventFeed) await(ctx context.Context, expire <-chan time.Time, done func() bool) error {
	for {
		f.mu.Lock()
		ok, failed, arrived := done(), f.failed, f.arrived
		f.mu.Unlock()
		switch {
		case failed:
			return errFeedBehind
		case ok:
			return nil
		}
		select {
		case <-arrived:
		case <-expire:
			return errFeedBehind
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// done reports whether the feed failed, or nobody read it since before.
func (f *eventFeed) done(before time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed || f.usedAt.Before(before)
}

// stop ends the feed; the consumer goes when the server sees it
// inactive.
func (f *eventFeed) stop() { f.cc.Stop() }
