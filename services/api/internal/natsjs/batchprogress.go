package natsjs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
)

// Defaults of BatchProgress.
const (
	// DefaultProgressRecheck is how old a batch's record of its jobs may
	// get before the jobs it shows not ended are read from their states
	// again. Events say everything in time; the states catch what events
	// cannot: an ending whose event is still unpublished (its worker died
	// in between, and the next one publishes it), or events aged out of
	// the output stream while nobody asked.
	DefaultProgressRecheck = time.Hour
	// progressMaxTail bounds the events read to bring a record up to
	// date; past it, reading the unended jobs' states costs less.
	progressMaxTail = 50_000
	// progressParallelism bounds the state reads in flight.
	progressParallelism = 64
)

// BatchProgress counts a batch's jobs by status without reading every
// job's state: it keeps, per batch, one letter per job
// (contracts.BatchProgress) and the output stream sequence up to which
// the project's lifecycle events were applied. A read applies the events
// since then (one message get when there are none) and stores the record
// back. Counts are as exact as the events: every status change of a job
// is followed by its event. A terminal letter never changes again, so an
// ending announced twice (a redelivered job) counts once.
type BatchProgress struct {
	js      jetstream.JetStream
	records state.Records[contracts.BatchProgress]
	jobs    state.Records[contracts.JobState]
	recheck time.Duration
	now     func() time.Time

	mu     sync.Mutex
	stream jetstream.Stream // the output stream's handle, once read
}

// NewBatchProgress returns the batch counter on the state bucket and the
// output stream; recheck 0 means DefaultProgressRecheck.
func NewBatchProgress(js jetstream.JetStream, kv jetstream.KeyValue, recheck time.Duration) *BatchProgress {
	st := state.New(kv)
	if recheck <= 0 {
		recheck = DefaultProgressRecheck
	}
	return &BatchProgress{js: js, records: st.BatchProgress, jobs: st.Jobs, recheck: recheck, now: time.Now}
}

// Counts returns b's jobs by status. Jobs whose state expired are left
// out.
func (p *BatchProgress) Counts(ctx context.Context, b contracts.Batch) (map[contracts.Status]int, error) {
	rec, rev, err := p.records.Get(ctx, b.ID)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return nil, err
	}
	if len(rec.Statuses) != len(b.JobIDs) {
		// New: the events since the batch's submission tell every job.
		rec = contracts.BatchProgress{V: contracts.Version, CheckedAt: p.now(),
			Statuses: strings.Repeat(string(rune(contracts.BatchProgressUnknown)), len(b.JobIDs))}
	}
	letters := []byte(rec.Statuses)
	changed, err := p.tail(ctx, b, letters, &rec)
	if err != nil {
		return nil, err
	}
	stale := p.now().Sub(rec.CheckedAt) > p.recheck
	check := make([]int, 0)
	for i, l := range letters {
		if l == contracts.BatchProgressUnknown || (stale && !terminalLetter(l)) {
			check = append(check, i)
		}
	}
	if len(check) > 0 {
		if err := p.readStates(ctx, b, letters, check); err != nil {
			return nil, err
		}
		changed = true
	}
	if stale {
		rec.CheckedAt = p.now()
	}
	if changed {
		rec.Statuses = string(letters)
		// A cache write: another reader storing its own view first is
		// fine (both are right), and a failed write only means the next
		// read does this one's work again.
		_, _ = p.records.Update(ctx, b.ID, rec, rev)
	}
	return countLetters(letters), nil
}

// tail applies the project's events after rec.Seq (or, for a new
// record, since the batch was submitted) to letters, and reports whether
// anything changed. Past progressMaxTail events it skips them and marks
// the unended jobs to be read from their states instead.
func (p *BatchProgress) tail(ctx context.Context, b contracts.Batch, letters []byte, rec *contracts.BatchProgress) (bool, error) {
	filter := contracts.SubjectProjectEvents(b.Project)
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     filter,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	}
	if rec.Seq > 0 {
		// Nothing new is the common case: one get says so, without a
		// consumer.
		stream, err := p.outputStream(ctx)
		if err != nil {
			return false, err
		}
		m, err := stream.GetMsg(ctx, rec.Seq+1, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read batch events: %w", err)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, m.Sequence
	} else {
		// The API stores the batch after queueing its jobs; a clock
		// skew between API and NATS is covered by the duplicate window.
		since := b.SubmittedAt.Add(-contracts.DuplicateWindow)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := p.js.CreateConsumer(ctx, contracts.StreamOutput, cfg)
	if err != nil {
		return false, fmt.Errorf("read batch events: %w", err)
	}
	defer func() {
		// Not left for the inactivity timeout: a stream allows a bounded
		// number of consumers, and the streamer needs them.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = p.js.DeleteConsumer(dctx, contracts.StreamOutput, cons.CachedInfo().Name)
	}()
	pending := cons.CachedInfo().NumPending
	if pending == 0 {
		return false, nil
	}
	if pending > progressMaxTail {
		// Cheaper to read the unended jobs' states; start after the last
		// event now stored.
		last, err := p.lastSeq(ctx)
		if err != nil {
			return false, err
		}
		for i, l := range letters {
			if !terminalLetter(l) {
				letters[i] = contracts.BatchProgressUnknown
			}
		}
		rec.Seq = last
		return true, nil
	}
	index := make(map[string]int, len(b.JobIDs))
	for i, id := range b.JobIDs {
		index[id] = i
	}
	id := []byte(b.ID)
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 1024)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return false, fmt.Errorf("read batch events: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			rec.Seq, pending = md.Sequence.Stream, md.NumPending
			// Most of a busy project's events are other batches': decode
			// only those naming this one.
			if !bytes.Contains(m.Data(), id) {
				continue
			}
			var ev contracts.Event
			if json.Unmarshal(m.Data(), &ev) != nil || ev.BatchID != b.ID {
				continue
			}
			i, ok := index[ev.JobID]
			if !ok {
				continue
			}
			if l, ok := contracts.BatchProgressLetter(ev.Status); ok && !terminalLetter(letters[i]) {
				letters[i] = l
			}
		}
		if err := batch.Error(); err != nil {
			return false, fmt.Errorf("read batch events: %w", err)
		}
		if got == 0 {
			break // the rest aged out meanwhile
		}
	}
	return true, nil
}

// readStates sets the letters at idx from the jobs' states.
func (p *BatchProgress) readStates(ctx context.Context, b contracts.Batch, letters []byte, idx []int) error {
	errs := make([]error, len(idx))
	sem := make(chan struct{}, progressParallelism)
	var wg sync.WaitGroup
	for k, i := range idx {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			st, _, err := p.jobs.Get(ctx, b.JobIDs[i])
			switch {
			case errors.Is(err, state.ErrNotFound):
				if !terminalLetter(letters[i]) {
					letters[i] = contracts.BatchProgressGone
				}
			case err != nil:
				errs[k] = err
			default:
				if l, ok := contracts.BatchProgressLetter(st.Status); ok && !terminalLetter(letters[i]) {
					letters[i] = l
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// outputStream returns the output stream's handle, read once.
func (p *BatchProgress) outputStream(ctx context.Context) (jetstream.Stream, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stream == nil {
		s, err := p.js.Stream(ctx, contracts.StreamOutput)
		if err != nil {
			return nil, fmt.Errorf("read batch events: %w", err)
		}
		p.stream = s
	}
	return p.stream, nil
}

// lastSeq is the output stream's last sequence now.
func (p *BatchProgress) lastSeq(ctx context.Context) (uint64, error) {
	s, err := p.js.Stream(ctx, contracts.StreamOutput)
	if err != nil {
		return 0, fmt.Errorf("read batch events: %w", err)
	}
	return s.CachedInfo().State.LastSeq, nil
}

// terminalLetter reports a letter of a status that ends a job.
func terminalLetter(l byte) bool {
	s, ok := contracts.BatchProgressStatus(l)
	return ok && s.Final()
}

// countLetters counts statuses; unknown and gone jobs are left out.
func countLetters(letters []byte) map[contracts.Status]int {
	var n [256]int
	for _, l := range letters {
		n[l]++
	}
	counts := map[contracts.Status]int{}
	for l, c := range n {
		if s, ok := contracts.BatchProgressStatus(byte(l)); ok && c > 0 {
			counts[s] = c
		}
	}
	return counts
}
