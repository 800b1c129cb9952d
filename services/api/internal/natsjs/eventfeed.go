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
// pending; the read waits until the last of them has arrived.
type eventFeed struct {
	cons jetstream.Consumer
	cc   jetstream.ConsumeContext

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
	f := &eventFeed{cons: cons, from: from, arrived: make(chan struct{}), usedAt: now}
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
	info, err := f.cons.Info(ctx)
	if err != nil {
		return nil, errFeedBehind
	}
	// The consumer sends in stream order and numbers what it sends: the
	// events stored before now are those it sent and the pending ones,
	// which are the next it sends, before any stored later.
	last := info.Delivered.Consumer + info.NumPending
	wait := time.NewTimer(feedCatchUp)
	defer wait.Stop()
	for {
		f.mu.Lock()
		caughtUp := last == 0 || (f.consumer == info.Name && f.delivered >= last)
		events, arrived, failed := f.events, f.arrived, f.failed
		covered := seq+1 >= f.from // events may have been dropped meanwhile
		f.mu.Unlock()
		switch {
		case failed || !covered:
			return nil, errFeedBehind
		case caughtUp:
			// Only a feed that serves reads counts as used: one that
			// keeps failing them goes idle and makes way for another.
			f.mu.Lock()
			f.usedAt = now
			f.mu.Unlock()
			i, _ := slices.BinarySearchFunc(events, seq+1, func(m directMsg, s uint64) int { return cmp.Compare(m.seq, s) })
			return events[i:], nil
		}
		select {
		case <-arrived:
		case <-wait.C:
			return nil, errFeedBehind
		case <-ctx.Done():
			return nil, ctx.Err()
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
