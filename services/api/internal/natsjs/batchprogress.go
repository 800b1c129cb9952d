package natsjs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
	// progressFetch is the most events asked for at once.
	progressFetch = 1024
)

// BatchProgress counts a batch's jobs by status without reading every
// job's state: it keeps, per batch, one letter per job
// (contracts.BatchProgress) and the output stream sequence up to which
// the project's lifecycle events were applied. A read applies the events
// stored since and stores the record for other API replicas and
// restarts. Once a project's batches are read again and again, the
// events come from the project's event feed (eventFeed); until then, and
// for a record the feed does not cover, from batched direct gets from
// the record's sequence (one round trip when there are none). Counts are
// as exact as the events: every status change of a job is followed by
// its event. A terminal letter
// never changes again, so an ending announced twice (a redelivered job)
// counts once.
type BatchProgress struct {
	js      jetstream.JetStream
	events  directReader // the output stream
	records state.Records[contracts.BatchProgress]
	jobs    state.Records[contracts.JobState]
	recheck time.Duration
	now     func() time.Time

	mu sync.Mutex
	// busy serialises the reads of one batch in this process: the
	// second reader of a batch starts from where the first ended instead
	// of reading the same events again, and readers that wait together
	// share the next read. A reader never shares a read begun before it
	// arrived, so it sees every event stored before its call.
	busy map[string]*batchTurn
	// followed are the batches read lately, at most progressFollowed.
	followed map[string]*followed
	// feeds are the event feeds of the projects of followed batches.
	feeds  map[string]*eventFeed
	closed bool
}

// followed is a batch read lately: its record as this process knows it.
type followed struct {
	rec     contracts.BatchProgress
	savedAt time.Time // when rec was last stored
	usedAt  time.Time
	// index is where each job id is in the batch, built at the first
	// event of the batch read: 10,000 map entries were most of a read's
	// CPU when built at every read.
	index map[string]int
}

const (
	// progressFollowed bounds the batch records this process keeps.
	progressFollowed = 64
	// progressSaveEvery is how often a followed batch's record is stored
	// at most; the record only spares another reader the events.
	progressSaveEvery = time.Second
)

// batchTurn is one batch's lock, how many readers hold or want it, and
// the counts of the last read.
type batchTurn struct {
	sync.Mutex
	n int
	// started numbers the reads begun (under p.mu); done is the number
	// of the last one that succeeded and counts its result (under the
	// batchTurn's lock).
	started, done uint64
	counts        map[contracts.Status]int
}

// turn waits for the batch's turn; release gives it up. Once it is the
// caller's turn, shared holds the counts of a read that began after the
// caller arrived, if one ended well while it waited: the caller returns
// those instead of reading again. Else the caller reads, and gives its
// counts to read.
func (p *BatchProgress) turn(id string) (shared map[contracts.Status]int, read func(map[contracts.Status]int), release func()) {
	p.mu.Lock()
	t := p.busy[id]
	if t == nil {
		t = &batchTurn{}
		p.busy[id] = t
	}
	t.n++
	arrived := t.started
	p.mu.Unlock()
	t.Lock()
	if t.done > arrived {
		shared = maps.Clone(t.counts)
	} else {
		p.mu.Lock()
		t.started++
		seq := t.started
		p.mu.Unlock()
		read = func(c map[contracts.Status]int) { t.done, t.counts = seq, c }
	}
	return shared, read, func() {
		t.Unlock()
		p.mu.Lock()
		if t.n--; t.n == 0 {
			delete(p.busy, id)
		}
		p.mu.Unlock()
	}
}

// NewBatchProgress returns the batch counter on the state bucket and the
// output stream; recheck 0 means DefaultProgressRecheck.
func NewBatchProgress(js jetstream.JetStream, kv jetstream.KeyValue, recheck time.Duration) *BatchProgress {
	st := state.New(kv, state.WithDirectGets(js))
	if recheck <= 0 {
		recheck = DefaultProgressRecheck
	}
	return &BatchProgress{js: js, events: newDirectReader(js, contracts.StreamOutput), records: st.BatchProgress, jobs: st.Jobs, recheck: recheck, now: time.Now,
		busy: map[string]*batchTurn{}, followed: map[string]*followed{}, feeds: map[string]*eventFeed{}}
}

// Close stops the event feeds.
func (p *BatchProgress) Close() {
	p.mu.Lock()
	feeds := p.feeds
	p.feeds, p.closed = map[string]*eventFeed{}, true
	p.mu.Unlock()
	for _, f := range feeds {
		f.stop()
	}
}

// feed returns project's event feed, if it has one, and stops the feeds
// that failed or that nobody read for feedIdle.
func (p *BatchProgress) feed(project string) *eventFeed {
	idle := p.now().Add(-feedIdle)
	p.mu.Lock()
	var stale []*eventFeed
	for name, f := range p.feeds {
		if f.done(idle) {
			stale = append(stale, f)
			delete(p.feeds, name)
		}
	}
	f := p.feeds[project]
	p.mu.Unlock()
	for _, f := range stale {
		f.stop()
	}
	return f
}

// startFeed gives project an event feed from sequence from, unless it
// has one or feedsMax projects have. A feed that cannot start leaves the
// reads to the stream.
func (p *BatchProgress) startFeed(ctx context.Context, project string, from uint64) {
	p.mu.Lock()
	full := len(p.feeds) >= feedsMax
	p.mu.Unlock()
	if full {
		return
	}
	f, err := openEventFeed(ctx, p.js, project, from, p.now())
	if err != nil {
		return
	}
	p.mu.Lock()
	_, had := p.feeds[project]
	keep := !had && !p.closed && len(p.feeds) < feedsMax
	if keep {
		p.feeds[project] = f
	}
	p.mu.Unlock()
	if !keep {
		f.stop()
	}
}

// Counts returns b's jobs by status. Jobs whose state expired are left
// out.
func (p *BatchProgress) Counts(ctx context.Context, b contracts.Batch) (map[contracts.Status]int, error) {
	shared, read, release := p.turn(b.ID)
	defer release()
	if shared != nil {
		return shared, nil
	}
	counts, err := p.count(ctx, b)
	if err == nil {
		read(maps.Clone(counts))
	}
	return counts, err
}

// count reads b's counts, in b's turn.
func (p *BatchProgress) count(ctx context.Context, b contracts.Batch) (map[contracts.Status]int, error) {
	f, err := p.follow(ctx, b)
	if err != nil {
		return nil, err
	}
	if settled(f.rec.Statuses) {
		// Every job has ended, and an ended job's letter never changes:
		// no event can change the counts, so none is read.
		return countLetters([]byte(f.rec.Statuses)), nil
	}
	letters := []byte(f.rec.Statuses)
	changed, err := p.tail(ctx, b, f, letters)
	if err != nil && ctx.Err() == nil {
		// A read failed midway: start again, once, from the stored
		// record.
		p.forget(b.ID)
		if f, err = p.follow(ctx, b); err != nil {
			return nil, err
		}
		letters = []byte(f.rec.Statuses)
		changed, err = p.tail(ctx, b, f, letters)
	}
	if err != nil {
		p.forget(b.ID)
		return nil, err
	}
	stale := p.now().Sub(f.rec.CheckedAt) > p.recheck
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
		f.rec.CheckedAt = p.now()
	}
	if changed {
		f.rec.Statuses = string(letters)
	}
	if changed && p.now().Sub(f.savedAt) >= progressSaveEvery {
		// A cache write, without compare-and-set: a replica storing an
		// older record over this one only makes the next reader apply
		// more events again (letters of ended jobs are right in both).
		// A failed write costs the same.
		if _, err := p.records.Put(ctx, b.ID, f.rec); err == nil {
			f.savedAt = p.now()
		}
	}
	return countLetters(letters), nil
}

// follow returns the batch's followed entry, from the stored record (or
// a new one) when this process does not follow it yet.
func (p *BatchProgress) follow(ctx context.Context, b contracts.Batch) (*followed, error) {
	p.mu.Lock()
	f := p.followed[b.ID]
	if f != nil {
		f.usedAt = p.now()
	}
	p.mu.Unlock()
	if f != nil && len(f.rec.Statuses) == len(b.JobIDs) {
		return f, nil
	}
	rec, _, err := p.records.Get(ctx, b.ID)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return nil, err
	}
	if len(rec.Statuses) != len(b.JobIDs) {
		// New: the events since the batch's submission tell every job.
		rec = contracts.BatchProgress{V: contracts.Version, CheckedAt: p.now(),
			Statuses: strings.Repeat(string(rune(contracts.BatchProgressUnknown)), len(b.JobIDs))}
	}
	f = &followed{rec: rec, usedAt: p.now()}
	p.mu.Lock()
	if len(p.followed) >= progressFollowed {
		var oldest string
		for id, o := range p.followed {
			if oldest == "" || o.usedAt.Before(p.followed[oldest].usedAt) {
				oldest = id
			}
		}
		delete(p.followed, oldest)
	}
	p.followed[b.ID] = f
	p.mu.Unlock()
	return f, nil
}

// forget stops following a batch.
func (p *BatchProgress) forget(id string) {
	p.mu.Lock()
	delete(p.followed, id)
	p.mu.Unlock()
}

// tail applies the project's events after f.rec.Seq (or, for a new
// record, since the batch was submitted) to letters, and reports whether
// anything changed. Past progressMaxTail events it skips them and marks
// the unended jobs to be read from their states instead.
func (p *BatchProgress) tail(ctx context.Context, b contracts.Batch, f *followed, letters []byte) (bool, error) {
	id := []byte(b.ID)
	changed, first, skip := false, true, false
	apply := func(m directMsg) bool {
		if first && m.pending >= progressMaxTail {
			skip = true
			return false
		}
		first = false
		f.rec.Seq, changed = m.seq, true
		// Most of a busy project's events are other batches': decode
		// only those naming this one.
		if !bytes.Contains(m.data, id) {
			return true
		}
		var ev contracts.Event
		if json.Unmarshal(m.data, &ev) != nil || ev.BatchID != b.ID {
			return true
		}
		if f.index == nil {
			f.index = make(map[string]int, len(b.JobIDs))
			for i, id := range b.JobIDs {
				f.index[id] = i
			}
		}
		if i, ok := f.index[ev.JobID]; ok {
			if l, ok := contracts.BatchProgressLetter(ev.Status); ok && !terminalLetter(letters[i]) {
				letters[i] = l
			}
		}
		return true
	}
	if feed := p.feed(b.Project); feed != nil && f.rec.Seq > 0 {
		events, err := feed.after(ctx, f.rec.Seq, p.now())
		if err == nil {
			for _, m := range events {
				apply(m)
			}
			return changed, nil
		}
		if ctx.Err() != nil {
			return false, err
		}
	} else if f.rec.Seq > 0 {
		// Reads of this project from now on take their events from a
		// feed; this one reads the stream, as the feed starts after it.
		defer func() {
			if f.rec.Seq > 0 {
				p.startFeed(ctx, b.Project, f.rec.Seq+1)
			}
		}()
	}
	for {
		req := directRequest{NextFor: contracts.SubjectProjectEvents(b.Project), Batch: progressFetch}
		if f.rec.Seq > 0 {
			req.Seq = f.rec.Seq + 1
		} else {
			// The API stores the batch after queueing its jobs; a clock
			// skew between API and NATS is covered by the duplicate
			// window.
			since := b.SubmittedAt.Add(-contracts.DuplicateWindow)
			req.StartTime = &since
		}
		more, err := p.events.batch(ctx, req, apply)
		if err != nil {
			return false, fmt.Errorf("read batch events: %w", err)
		}
		if skip {
			// Cheaper to read the unended jobs' states; go on after the
			// last event now stored.
			last, err := p.lastSeq(ctx)
			if err != nil {
				return false, err
			}
			for i, l := range letters {
				if !terminalLetter(l) {
					letters[i] = contracts.BatchProgressUnknown
				}
			}
			f.rec.Seq = last
			return true, nil
		}
		if !more {
			return changed, nil
		}
	}
}

// readStates sets the letters at idx from the jobs' states, read with
// batched direct gets (a new 10,000-job batch: 40 requests, not 10,000).
func (p *BatchProgress) readStates(ctx context.Context, b contracts.Batch, letters []byte, idx []int) error {
	ids := make([]string, len(idx))
	for k, i := range idx {
		ids[k] = b.JobIDs[i]
	}
	states, found, err := p.jobs.GetMany(ctx, ids)
	if err != nil {
		return err
	}
	for k, i := range idx {
		if terminalLetter(letters[i]) {
			continue
		}
		if !found[k] {
			letters[i] = contracts.BatchProgressGone
		} else if l, ok := contracts.BatchProgressLetter(states[k].Status); ok {
			letters[i] = l
		}
	}
	return nil
}

// lastSeq is the output stream's last sequence now.
func (p *BatchProgress) lastSeq(ctx context.Context) (uint64, error) {
	s, err := p.js.Stream(ctx, contracts.StreamOutput)
	if err != nil {
		return 0, fmt.Errorf("read batch events: %w", err)
	}
	return s.CachedInfo().State.LastSeq, nil
}

// settled reports a record whose every job has ended.
func settled(statuses string) bool {
	for i := range len(statuses) {
		if !terminalLetter(statuses[i]) {
			return false
		}
	}
	return true
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
