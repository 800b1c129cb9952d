package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
)

// jetStreamFloor measures what a job queue on JetStream costs at the
// least on this machine, against asynq in the same run: is a target set
// as a multiple of asynq's jobs/s within reach of any design that keeps
// jobs in JetStream, whatever rdev itself does?
//
// Three skeleton queues run in rdevbench's own process on the embedded
// server rdev up uses (natsserver.Start: file storage, in-process
// connections; without rdev's users and permissions, and with messages of
// about a hundred bytes, so a little cheaper than rdev's), with asynq's
// concurrency and its `true` per job:
//
//   - "minimal": what any durable queue must write — the job stored
//     before the submit returns, its outcome stored before its message is
//     acknowledged: 2 stored messages and 1 acknowledgement per job, one
//     pull request for up to the free slots, no state, event or audit.
//   - "with state": the same plus a job state a reader can look up, as
//     rdev keeps one: created before the job is queued, claimed by
//     compare-and-set before the command runs, ended after it: 5 stored
//     and 1 acknowledgement.
//   - "rdev's writes": the writes rdev makes per job (the e2e scenario
//     counts them), in its order, with none of its code: 14 stored (state
//     ×3, index entry ×3, spec, stream reference, audit record ×2, the
//     job, events ×3) and 4 acknowledgements (the worker's, a consumer
//     taking the started and terminal events as the notifier does, one
//     copying terminal events to the audit log).
//
// What rdev costs beyond the last is its code; beyond the first, its
// features.
func jetStreamFloor(ctx context.Context, e *env, cfg config) ([]figure, error) {
	n := cfg.queueJobs
	var figs []figure
	rates := map[floorShape]float64{}
	for _, shape := range []floorShape{floorMinimal, floorState, floorRdev} {
		name := "JetStream " + shape.String()
		dir, err := e.dataDir("floor")
		if err != nil {
			return nil, err
		}
		before, err := readCPUs([]int{os.Getpid()})
		if err != nil {
			return nil, err
		}
		took, err := floorRun(ctx, dir, n, shape)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		after, err := readCPUs([]int{os.Getpid()})
		if err != nil {
			return nil, err
		}
		rates[shape] = float64(n) / took.Seconds()
		figs = append(figs, fig(name+": jobs/s, submit to all done (execs `true`)", rates[shape], "jobs/s"))
		figs = append(figs, perJob(before, after, 0, n, took).figures(name+" (server included)", "job")...)
	}
	asynqRate, acpu, err := asynqMeasured(ctx, e, n)
	if err != nil {
		return nil, err
	}
	figs = append(figs, acpu.asynqFigures(asynqRate)...)
	figs = append(figs,
		fig("JetStream minimal / asynq", rates[floorMinimal]/asynqRate, "x"),
		fig("JetStream with state / asynq", rates[floorState]/asynqRate, "x"),
		fig("JetStream with rdev's writes / asynq", rates[floorRdev]/asynqRate, "x"),
		loadFigure("load average after asynq"))
	return figs, nil
}

// floorShape is what a skeleton queue writes per job.
type floorShape int

const (
	floorMinimal floorShape = iota // the job and its outcome
	floorState                     // + a state created, claimed and ended
	floorRdev                      // rdev's 14 stored messages and 4 acknowledgements
)

func (s floorShape) String() string {
	return [...]string{"minimal", "with state", "with rdev's writes"}[s]
}

// floorRun submits n jobs to a skeleton queue of shape on a fresh
// embedded server and runs them queueConcurrency at a time; it returns
// the time from the first submit to the last job done.
func floorRun(ctx context.Context, dir string, n int, shape floorShape) (time.Duration, error) {
	srv, err := natsserver.Start(natsserver.Config{StoreDir: dir})
	if err != nil {
		return 0, err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	conn := func() (*nats.Conn, jetstream.JetStream, error) {
		nc, err := nats.Connect("", nats.InProcessServer(natsserver.NewInProcess(srv)))
		if err != nil {
			return nil, nil, err
		}
		js, err := jetstream.New(nc)
		return nc, js, err
	}
	pc, pjs, err := conn() // the submitter's, as the API's
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	wc, wjs, err := conn() // the worker's
	if err != nil {
		return 0, err
	}
	defer wc.Close()

	jobsStream, err := pjs.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, err
	}
	// Outcomes, and in rdev's shape every event: ev.<job>.<type>.
	if _, err := pjs.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"ev.>"},
		Storage: jetstream.FileStorage}); err != nil {
		return 0, err
	}
	var pkv, wkv jetstream.KeyValue
	if shape >= floorState {
		if pkv, err = pjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "state", Storage: jetstream.FileStorage}); err != nil {
			return 0, err
		}
		if wkv, err = wjs.KeyValue(ctx, "state"); err != nil {
			return 0, err
		}
	}
	if shape == floorRdev {
		if err := floorAudit(ctx, pjs); err != nil {
			return 0, err
		}
	}
	cons, err := jobsStream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "worker",
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1})
	if err != nil {
		return 0, err
	}
	wcons, err := wjs.Consumer(ctx, "JOBS", "worker")
	if err != nil {
		return 0, err
	}

	var done atomic.Int64
	finished := make(chan struct{})
	errc := make(chan error, 1)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	state := []byte(`{"job_id":"j","status":"queued","project":"bench","priority":"normal","submitted_at":"2026-12-06T00:00:00Z"}`)
	slots := make(chan struct{}, queueConcurrency)
	var running sync.WaitGroup
	handle := func(msg jetstream.Msg) {
		defer func() { <-slots; running.Done() }()
		// The job names its state's revision, so the claim needs no read
		// (as rdev's first delivery).
		id, revText, _ := strings.Cut(string(msg.Data()), " ")
		rev, _ := strconv.ParseUint(revText, 10, 64)
		if shape >= floorState {
			var err error
			if rev, err = wkv.Update(ctx, id, state, rev); err != nil {
				fail(fmt.Errorf("claim %s: %w", id, err))
				return
			}
		}
		var started [2]jetstream.PubAckFuture // the index entry and the started event, in the background
		if shape == floorRdev {
			var err error
			if started[0], err = wjs.PublishAsync("$KV.state.index."+id, state); err != nil {
				fail(err)
				return
			}
			if started[1], err = wjs.PublishAsync("ev."+id+".started", state); err != nil {
				fail(err)
				return
			}
		}
		if err := exec.CommandContext(ctx, "true").Run(); err != nil {
			fail(err)
			return
		}
		if shape == floorRdev {
			if _, err := floorWait(ctx, started[:]...); err != nil {
				fail(err)
				return
			}
		}
		if shape >= floorState {
			if _, err := wkv.Update(ctx, id, state, rev); err != nil {
				fail(fmt.Errorf("end %s: %w", id, err))
				return
			}
		}
		if shape == floorRdev {
			if _, err := wkv.Put(ctx, "index."+id, state); err != nil {
				fail(err)
				return
			}
		}
		if _, err := wjs.Publish(ctx, "ev."+id+".succeeded", state); err != nil {
			fail(fmt.Errorf("outcome %s: %w", id, err))
			return
		}
		ack := msg.Ack
		if shape == floorRdev {
			ack = func() error { return msg.DoubleAck(ctx) }
		}
		if err := ack(); err != nil {
			fail(fmt.Errorf("ack %s: %w", id, err))
			return
		}
		if done.Add(1) == int64(n) {
			close(finished)
		}
	}
	// Each pull request asks for as many jobs as there are free slots,
	// without waiting; only when none is there does one wait for the next.
	stopTaking := make(chan struct{})
	var taking sync.WaitGroup
	taking.Go(func() {
		for {
			select {
			case slots <- struct{}{}:
			case <-stopTaking:
				return
			}
			free := 1
			for free < queueConcurrency {
				select {
				case slots <- struct{}{}:
					free++
					continue
				default:
				}
				break
			}
			batch, err := wcons.FetchNoWait(free)
			got := 0
			if err == nil {
				got, err = floorTake(batch, &running, handle)
			}
			if err == nil && got == 0 {
				if batch, err = wcons.Fetch(1, jetstream.FetchMaxWait(time.Second)); err == nil {
					got, err = floorTake(batch, &running, handle)
				}
			}
			for range free - got {
				<-slots
			}
			if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				fail(fmt.Errorf("fetch: %w", err))
				return
			}
		}
	})
	defer func() { close(stopTaking); taking.Wait(); running.Wait() }()
	if shape == floorRdev {
		stop, err := floorEventReaders(ctx, pjs, fail)
		if err != nil {
			return 0, err
		}
		defer stop()
	}

	t0 := time.Now()
	submit := func(id string) (jetstream.PubAckFuture, error) {
		switch shape {
		case floorState:
			rev, err := pkv.Create(ctx, id, state)
			if err != nil {
				return nil, fmt.Errorf("create state %s: %w", id, err)
			}
			return pjs.PublishAsync("jobs", []byte(id+" "+strconv.FormatUint(rev, 10)))
		case floorRdev:
			// State, spec, stream reference and audit record at once, the
			// index entry after them in the background; then the job and
			// its queued event at once.
			var first [4]jetstream.PubAckFuture
			var err error
			for i, subj := range []string{"$KV.state." + id, "$KV.state.spec." + id, "$KV.state.stream." + id, "audit.submitted"} {
				if first[i], err = pjs.PublishAsync(subj, state); err != nil {
					return nil, err
				}
			}
			stored, err := floorWait(ctx, first[:]...)
			if err != nil {
				return nil, err
			}
			if _, err := pjs.PublishAsync("$KV.state.index."+id, state); err != nil {
				return nil, err
			}
			queued, err := pjs.PublishAsync("ev."+id+".queued", state)
			if err != nil {
				return nil, err
			}
			job, err := pjs.PublishAsync("jobs", []byte(id+" "+strconv.FormatUint(stored.Sequence, 10)))
			if err != nil {
				return nil, err
			}
			_, err = floorWait(ctx, queued)
			return job, err
		}
		return pjs.PublishAsync("jobs", []byte(id))
	}
	// Every job stored before "accepted"; the submits run as many at
	// once as the worker's slots.
	var submits sync.WaitGroup
	sem := make(chan struct{}, queueConcurrency)
	for i := range n {
		sem <- struct{}{}
		submits.Go(func() {
			defer func() { <-sem }()
			f, err := submit("j" + strconv.Itoa(i))
			if err == nil {
				_, err = floorWait(ctx, f)
			}
			if err != nil {
				fail(fmt.Errorf("submit: %w", err))
			}
		})
	}
	submits.Wait()
	select {
	case <-finished:
	case err := <-errc:
		return 0, err
	case <-time.After(10 * time.Minute):
		return 0, fmt.Errorf("%d of %d jobs done after 10 minutes", done.Load(), n)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	took := time.Since(t0)
	// An acknowledgement is not always waited for (a lost one only
	// redelivers a job already done), so the last ones may still be on
	// their way.
	for wait := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		info, err := cons.Info(ctx)
		if err != nil {
			return 0, err
		}
		if info.NumAckPending == 0 && info.NumPending == 0 {
			return took, nil
		}
		if time.Now().After(wait) {
			return 0, fmt.Errorf("%d jobs unacknowledged, %d never delivered, 5 s after the last was done", info.NumAckPending, info.NumPending)
		}
	}
}

// floorTake runs handle on each message of batch and counts them.
func floorTake(batch jetstream.MessageBatch, running *sync.WaitGroup, handle func(jetstream.Msg)) (int, error) {
	got := 0
	for msg := range batch.Messages() {
		got++
		running.Add(1)
		go handle(msg)
	}
	return got, batch.Error()
}

// floorAudit makes the audit stream of rdev's shape.
func floorAudit(ctx context.Context, js jetstream.JetStream) error {
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AUDIT", Subjects: []string{"audit.>"}, Storage: jetstream.FileStorage})
	return err
}

// floorEventReaders runs rdev's two readers of events: one takes every
// event but the queued ones and acknowledges it (the notifier); one
// copies each terminal event to the audit stream, then acknowledges it
// (the audit copier).
func floorEventReaders(ctx context.Context, js jetstream.JetStream, fail func(error)) (stop func(), err error) {
	every, err := js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{Durable: "notifier",
		FilterSubjects: []string{"ev.*.started", "ev.*.succeeded"}, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		return nil, err
	}
	ended, err := js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{Durable: "audit", FilterSubject: "ev.*.succeeded",
		AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		return nil, err
	}
	a, err := every.Consume(func(m jetstream.Msg) {
		if err := m.Ack(); err != nil {
			fail(err)
		}
	})
	if err != nil {
		return nil, err
	}
	b, err := ended.Consume(func(m jetstream.Msg) {
		if _, err := js.Publish(ctx, "audit.finished", m.Data()); err != nil {
			fail(err)
			return
		}
		if err := m.Ack(); err != nil {
			fail(err)
		}
	})
	if err != nil {
		a.Stop()
		return nil, err
	}
	return func() { a.Stop(); b.Stop() }, nil
}

// floorWait waits for the server's acknowledgement of each publish, and
// returns the first's.
func floorWait(ctx context.Context, fs ...jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	var first *jetstream.PubAck
	for i, f := range fs {
		select {
		case a := <-f.Ok():
			if i == 0 {
				first = a
			}
		case err := <-f.Err():
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return first, nil
}
