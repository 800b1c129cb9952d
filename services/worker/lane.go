package worker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/services/worker/internal/runner"
)

// highLane is the highest priority level's own connection (Deps.High).
// Every round trip a high job waits on before its command starts, the
// pull that brings it and its claim, would otherwise queue in a shared
// connection behind the round trips of the jobs of every other level.
type highLane struct {
	level contracts.Priority
	js    jetstream.JetStream
}

func newHighLane(nc *nats.Conn) (*highLane, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("worker: jetstream on the high-priority connection: %w", err)
	}
	return &highLane{level: contracts.Priorities()[0], js: js}, nil
}

// consumer returns the level's job consumer, made by JobConsumers, bound to
// the lane: its pulls, and the acknowledgements of what they bring, go
// through the lane's connection.
func (l *highLane) consumer(ctx context.Context) (jetstream.Consumer, error) {
	c, err := l.js.Consumer(ctx, contracts.StreamJobs, contracts.ConsumerJobs(l.level))
	if err != nil {
		return nil, fmt.Errorf("consumer for %s jobs on its own connection: %w", l.level, err)
	}
	return c, nil
}

// states writes the states of the level's jobs through the lane and every
// other job's through others. A job's priority never changes, so all of
// its writes go one way, through one state.Store, whose index writes
// follow one another per job.
func (l *highLane) states(ctx context.Context, others runner.States) (runner.States, error) {
	kv, err := l.js.KeyValue(ctx, contracts.BucketState)
	if err != nil {
		return nil, fmt.Errorf("state bucket on the high-priority connection: %w", err)
	}
	return laneStates{level: l.level, lane: state.New(kv).Jobs, others: others}, nil
}

type laneStates struct {
	level        contracts.Priority
	lane, others runner.States
}

// Get reads through others: a read does not say whose job it is, and the
// runner reads only off the path to a first attempt's start.
func (s laneStates) Get(ctx context.Context, jobID string) (contracts.JobState, uint64, error) {
	return s.others.Get(ctx, jobID)
}

func (s laneStates) Update(ctx context.Context, jobID string, st contracts.JobState, rev uint64) (uint64, error) {
	if st.Priority == s.level {
		return s.lane.Update(ctx, jobID, st, rev)
	}
	return s.others.Update(ctx, jobID, st, rev)
}
