package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Handler runs one dispatched job message and settles it (ack, nak, term).
// ctx ends when the worker's drain timeout expires.
type Handler func(ctx context.Context, msg jetstream.Msg)

// Config tunes a Dispatcher.
type Config struct {
	// Concurrency is the number of jobs of any level run at once; default
	// 4.
	Concurrency int
	// HighSlots is the number of run slots, beyond Concurrency, that only
	// the highest level (index 0) may use: a high-priority job starts as
	// soon as it is fetched even while the lower levels fill all
	// Concurrency slots, instead of waiting for one of them to free. 0
	// keeps none. Fairness is unchanged: a lower level whose turn it is
	// takes the next Concurrency slot (see Picker.PickUpTo).
	HighSlots int
	// FairEvery gives each lower level at least one dispatch in every
	// FairEvery while it has work; default 10.
	FairEvery int
	// LevelSlots caps, by level index, how many jobs of a level run at
	// once, whatever slots are open (0 or absent: no cap beyond the
	// slots). A level at its cap is Capped until one of its jobs ends:
	// the others take the free slots and the Picker does not wait for
	// it. Capping a low level keeps CPU free for the higher ones, which
	// may still fill every slot.
	LevelSlots []int
	// Heartbeat is how often a held message is kept alive with InProgress;
	// it must be well below the consumers' AckWait. Default 10s.
	Heartbeat time.Duration
	// FetchWait is how long one pull request waits for a message; default 30s.
	FetchWait time.Duration
}

func (c *Config) setDefaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	c.HighSlots = max(c.HighSlots, 0)
	if c.FairEvery <= 0 {
		c.FairEvery = 10
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 10 * time.Second
	}
	if c.FetchWait <= 0 {
		c.FetchWait = 30 * time.Second
	}
}

// Dispatcher pulls from one consumer per priority level.
type Dispatcher struct {
	cfg    Config
	levels []jetstream.Consumer
	log    *slog.Logger

	mu     sync.Mutex
	held   []jetstream.Msg
	coming []bool
	paused []bool
	// running counts each level's jobs in their handlers (for LevelSlots).
	running []int
	taken   []chan struct{}
	supply  []Supply // scratch for take
	picker  *Picker
	wake    chan struct{}
}

// New returns a Dispatcher over consumers, highest priority first.
func New(cfg Config, consumers []jetstream.Consumer, log *slog.Logger) *Dispatcher {
	cfg.setDefaults()
	d := &Dispatcher{
		cfg: cfg, levels: consumers, log: log,
		held:    make([]jetstream.Msg, len(consumers)),
		coming:  make([]bool, len(consumers)),
		paused:  make([]bool, len(consumers)),
		running: make([]int, len(consumers)),
		taken:   make([]chan struct{}, len(consumers)),
		supply:  make([]Supply, len(consumers)),
		picker:  NewPicker(len(consumers), cfg.FairEvery),
		wake:    make(chan struct{}, 1),
	}
	for i := range d.taken {
		d.taken[i] = make(chan struct{}, 1)
	}
	return d
}

// Pause stops (paused) or restarts the dispatch of level i. A paused
// level's held message stays held, kept alive, and its jobs wait in the
// queue; nothing is lost. Safe to call at any time.
func (d *Dispatcher) Pause(i int, paused bool) {
	d.mu.Lock()
	d.paused[i] = paused
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run dispatches until ctx ends, then hands back held messages (Nak) and
// waits for running handlers. Handlers get runCtx, which the caller cancels
// when the drain time is up.
//
// It dispatches whenever a message is held or a slot frees, as many as
// the open slots take: a message of the highest level that arrives while
// the Concurrency slots are full starts at once in an open HighSlots slot.
func (d *Dispatcher) Run(ctx, runCtx context.Context, handle Handler) {
	var fetchers, runners sync.WaitGroup
	for i := range d.levels {
		fetchers.Go(func() { d.fetchLoop(ctx, i) })
	}
	// freed gets one value per finished handler. Never full, so a handler
	// never waits to report.
	type slot struct {
		level int
		high  bool // a HighSlots one
	}
	freed := make(chan slot, d.cfg.Concurrency+d.cfg.HighSlots)
	open, openHigh := d.cfg.Concurrency, d.cfg.HighSlots
	// Handlers run on goroutines kept for the next job, not on a new one
	// each: a handler's stack grows to some 16 KiB (claim, run, settle,
	// through nats.go), and a new goroutine grows it again by copying it
	// every time, 4 % of rdev up's CPU in the e2e profile. A job goes to
	// a runner waiting for one, else to a new runner; as a runner is
	// waiting again soon after its slot frees, there are at most twice as
	// many runners as slots.
	next := make(chan func())
	start := func(job func()) {
		select {
		case next <- job:
			return
		default:
		}
		runners.Go(func() {
			for job != nil {
				job()
				select {
				case job = <-next:
				case <-ctx.Done():
					job = nil
				}
			}
		})
	}
	for {
		for (open > 0 || openHigh > 0) && ctx.Err() == nil {
			lowest := len(d.levels) - 1
			if open == 0 {
				lowest = 0
			}
			msg, lvl := d.take(lowest)
			if msg == nil {
				break
			}
			// Any slot serves the highest level; a HighSlots one only when
			// the others are full, so it stays open for the next high job.
			high := open == 0
			if high {
				openHigh--
			} else {
				open--
			}
			start(func() {
				defer func() { freed <- slot{level: lvl, high: high} }()
				handle(runCtx, msg)
			})
		}
		select {
		case s := <-freed:
			if s.high {
				openHigh++
			} else {
				open++
			}
			d.mu.Lock()
			d.running[s.level]--
			d.mu.Unlock()
		case <-d.wake:
		case <-ctx.Done():
			fetchers.Wait()
			runners.Wait()
			return
		}
	}
}

// take takes the held message the Picker chooses among levels 0 to
// lowest, and returns it with its level, or nil when there is none to
// take now; the dispatcher is woken (d.wake, or a freed slot) when that
// may have changed.
func (d *Dispatcher) take(lowest int) (jetstream.Msg, int) {
	d.mu.Lock()
	for i, m := range d.held {
		switch {
		case d.paused[i]:
			d.supply[i] = Empty
		case (m != nil || d.coming[i]) && d.atCap(i):
			d.supply[i] = Capped
		case m != nil:
			d.supply[i] = Held
		case d.coming[i]:
			d.supply[i] = Coming
		default:
			d.supply[i] = Empty
		}
	}
	lvl := d.picker.PickUpTo(d.supply, lowest)
	if lvl < 0 {
		d.mu.Unlock()
		return nil, -1
	}
	msg := d.held[lvl]
	d.held[lvl] = nil
	d.running[lvl]++
	// Its fetcher now asks for the next one without waiting: until it
	// answers, the level still has work.
	d.coming[lvl] = true
	d.mu.Unlock()
	d.taken[lvl] <- struct{}{}
	return msg, lvl
}

// atCap reports whether level i runs as many jobs as LevelSlots allows;
// d.mu is held.
func (d *Dispatcher) atCap(i int) bool {
	return i < len(d.cfg.LevelSlots) && d.cfg.LevelSlots[i] > 0 && d.running[i] >= d.cfg.LevelSlots[i]
}

// fetchLoop keeps at most one message of level i held for the dispatcher.
// After a message is taken it asks for the next without waiting, so the
// level counts as Coming for one round trip only; when that finds nothing
// the level is Empty and the next pull waits for work.
func (d *Dispatcher) fetchLoop(ctx context.Context, i int) {
	backoff := 100 * time.Millisecond
	more := false // the last message was taken: fetch the next without waiting
	for ctx.Err() == nil {
		var (
			msg jetstream.Msg
			err error
		)
		if more {
			msg, err = d.fetchNoWait(i)
		} else {
			msg, err = d.fetchOne(ctx, i)
		}
		more = false
		if msg == nil {
			d.settle(i)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.log.Warn("fetch jobs failed; retrying", "level", i, "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if msg != nil {
			more = d.hold(ctx, i, msg)
		}
	}
}

// settle marks level i Empty after a fetch found nothing, so that the
// Picker stops waiting for it.
func (d *Dispatcher) settle(i int) {
	d.mu.Lock()
	was := d.coming[i]
	d.coming[i] = false
	d.mu.Unlock()
	if was {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// fetchNoWait returns the level's next message if one is available now,
// or nil at once when none is. nats.go ends a no-wait fetch the server
// does not answer within a second (a lost consumer leader), so a level is
// Coming, and lower levels wait for it, for at most about that long.
func (d *Dispatcher) fetchNoWait(i int) (jetstream.Msg, error) {
	batch, err := d.levels[i].FetchNoWait(1)
	if err != nil {
		return nil, err
	}
	var got jetstream.Msg
	for m := range batch.Messages() {
		got = m
	}
	if err := batch.Error(); err != nil && got == nil && !errors.Is(err, jetstream.ErrNoMessages) {
		return nil, err
	}
	return got, nil
}

func (d *Dispatcher) fetchOne(ctx context.Context, i int) (jetstream.Msg, error) {
	fctx, cancel := context.WithTimeout(ctx, d.cfg.FetchWait)
	defer cancel()
	// Idle heartbeats tell a pull request lost with its consumer's leader
	// (a node that died) within seconds, not at the end of the wait.
	batch, err := d.levels[i].Fetch(1, jetstream.FetchContext(fctx), jetstream.FetchHeartbeat(min(5*time.Second, d.cfg.FetchWait/3)))
	if err != nil {
		return nil, err
	}
	var got jetstream.Msg
	for m := range batch.Messages() {
		got = m
	}
	if err := batch.Error(); err != nil && got == nil &&
		!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && !errors.Is(err, jetstream.ErrNoMessages) {
		return nil, err
	}
	return got, nil
}

// hold offers msg to the dispatcher and keeps it alive until taken; it
// reports whether it was taken. When ctx ends first the message goes back
// to the queue for another worker.
func (d *Dispatcher) hold(ctx context.Context, i int, msg jetstream.Msg) bool {
	d.mu.Lock()
	d.held[i] = msg
	d.coming[i] = false
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	tick := time.NewTicker(d.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-d.taken[i]:
			return true
		case <-tick.C:
			_ = msg.InProgress()
		case <-ctx.Done():
			d.mu.Lock()
			mine := d.held[i] == msg
			if mine {
				d.held[i] = nil
			}
			d.mu.Unlock()
			if mine {
				_ = msg.Nak()
				return false
			}
			<-d.taken[i]
			return true
		}
	}
}
