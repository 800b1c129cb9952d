package natsjs

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// ConsumerAuditFinished is the durable consumer, shared by every API, that
// copies terminal job events into the audit log.
const ConsumerAuditFinished = "rdev-audit-finished"

// RecordFinished copies every terminal job event into the audit log as a
// job_finished record until ctx ends. API replicas share the durable
// consumer, so each event is handled by one of them; an event is
// acknowledged only after its record is stored, and the record's id is
// derived from the job, so a redelivery is stored once.
func (a *AuditLog) RecordFinished(ctx context.Context) error {
	var terminal []contracts.EventType
	for _, t := range contracts.EventTypes() {
		if t.Terminal() {
			terminal = append(terminal, t)
		}
	}
	filters := contracts.SubjectEventsOf(terminal...)
	cons, err := a.js.CreateOrUpdateConsumer(ctx, contracts.StreamOutput, jetstream.ConsumerConfig{
		Durable:        ConsumerAuditFinished,
		Description:    "rdev API: terminal job events to the audit log",
		FilterSubjects: filters,
		// Jobs that ended before the first API started were not audited
		// by anyone; start from what is new.
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1024,
	})
	if err != nil {
		return fmt.Errorf("audit consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var ev contracts.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil || !ev.Type.Terminal() {
			_ = m.Term()
			return
		}
		detail := map[string]any{"status": ev.Status, "attempt": ev.Attempt, "duration_ms": ev.DurationMS, "lines": ev.Lines}
		if ev.ExitCode != nil {
			detail["exit_code"] = *ev.ExitCode
		}
		if ev.Reason != "" {
			detail["reason"] = ev.Reason
		}
		err := a.Record(ctx, contracts.AuditRecord{
			ID: "finished-" + ev.JobID, Time: ev.Time, Kind: contracts.AuditJobFinished,
			Actor: "system", Project: ev.Project, JobID: ev.JobID, Detail: detail,
		})
		if err != nil {
			a.log.Warn("audit of a finished job failed; it will be retried", "job_id", ev.JobID, "err", err)
			_ = m.NakWithDelay(time.Second)
			return
		}
		_ = m.Ack()
	})
	if err != nil {
		return fmt.Errorf("audit consumer: %w", err)
	}
	go func() {
		<-ctx.Done()
		cc.Drain()
	}()
	return nil
}
