package natsjs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// AuditLog appends to and reads the audit stream (contracts.StreamAudit).
type AuditLog struct {
	js  jetstream.JetStream
	log *slog.Logger
	// timeout bounds a durable append.
	timeout time.Duration
}

// NewAuditLog returns the audit log on a provisioned topology.
func NewAuditLog(js jetstream.JetStream, timeout time.Duration, log *slog.Logger) *AuditLog {
	return &AuditLog{js: js, log: log, timeout: timeout}
}

// Record appends rec and returns once JetStream has stored it. It fills in
// V, ID and Time when they are empty; rec.ID doubles as the message id, so
// a retried append is stored once.
func (a *AuditLog) Record(ctx context.Context, rec contracts.AuditRecord) error {
	msg, err := a.message(rec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	if _, err := a.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("append audit record %s: %w", rec.Kind, err)
	}
	return nil
}

// RecordAsync appends rec without waiting for the store's acknowledgement,
// for records the request must not wait on (refusals); a failure is
// logged.
func (a *AuditLog) RecordAsync(rec contracts.AuditRecord) {
	msg, err := a.message(rec)
	if err == nil {
		var f jetstream.PubAckFuture
		if f, err = a.js.PublishMsgAsync(msg); err == nil {
			go func() {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					a.log.Warn("audit record lost", "kind", rec.Kind, "err", err)
				}
			}()
			return
		}
	}
	a.log.Warn("audit record lost", "kind", rec.Kind, "err", err)
}

func (a *AuditLog) message(rec contracts.AuditRecord) (*nats.Msg, error) {
	rec.V = contracts.Version
	if rec.ID == "" {
		rec.ID = ulid.Make().String()
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(contracts.SubjectAudit(rec.Project, rec.Kind))
	msg.Data = b
	msg.Header.Set(contracts.HeaderMsgID, rec.ID)
	return msg, nil
}

// AuditQuery selects audit records. Zero fields select everything.
type AuditQuery struct {
	Project string
	// Incarnation, with Project, skips records of the project's other
	// incarnations (those that name another one).
	Incarnation string
	Kind        contracts.AuditKind
	Actor       string
	Since       time.Time
	Until       time.Time
	// After is a cursor: only records with a larger sequence are returned.
	After uint64
	// Limit is the most records returned.
	Limit int
	// MaxScan bounds the records read to answer one query, so a selective
	// filter over a long log cannot hold the API; the cursor goes on from
	// where the scan stopped.
	MaxScan int
}

// Query returns records matching q, oldest first, and the cursor for the
// next page (0 when the log holds nothing more to read).
func (a *AuditLog) Query(ctx context.Context, q AuditQuery) ([]contracts.AuditRecord, uint64, error) {
	project, kind := "*", "*"
	if q.Project != "" {
		project = q.Project
	}
	if q.Kind != "" {
		kind = string(q.Kind)
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contracts.SubjectAuditPrefix + "." + project + "." + kind},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	switch {
	case q.After > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, q.After+1
	case !q.Since.IsZero():
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &q.Since
	}
	cons, err := a.js.OrderedConsumer(ctx, contracts.StreamAudit, cfg)
	if err != nil {
		return nil, 0, fmt.Errorf("read audit log: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("read audit log: %w", err)
	}
	pending := info.NumPending
	var out []contracts.AuditRecord
	var last uint64
	scanned := 0
	for pending > 0 && len(out) < q.Limit && scanned < q.MaxScan {
		// Never ask for more than is pending: Fetch waits until the batch
		// is full or its max wait ends.
		n := min(uint64(q.Limit-len(out)+1), uint64(q.MaxScan-scanned), 256, pending)
		batch, err := cons.Fetch(int(n), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, 0, fmt.Errorf("read audit log: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			scanned++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			last, pending = md.Sequence.Stream, md.NumPending
			if len(out) >= q.Limit {
				// Read past the page: the cursor must not skip this record.
				last--
				pending++
				break
			}
			var rec contracts.AuditRecord
			if json.Unmarshal(m.Data(), &rec) != nil {
				continue
			}
			rec.Seq = md.Sequence.Stream
			if q.Actor != "" && rec.Actor != q.Actor {
				continue
			}
			if q.Incarnation != "" && rec.ProjectIncarnation != "" && rec.ProjectIncarnation != q.Incarnation {
				continue
			}
			if !q.Until.IsZero() && rec.Time.After(q.Until) {
				pending = 0 // records are appended in time order
				break
			}
			out = append(out, rec)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, 0, fmt.Errorf("read audit log: %w", err)
		}
		if got == 0 {
			break
		}
	}
	if pending == 0 {
		return out, 0, nil
	}
	return out, last, nil
}

// Submitted records an accepted job: the argv (for a prompt only the
// SHA-256 of its JSON-encoded argv,
// since a prompt may hold secrets the audit log should not), priority,
// the names of its env variables (values redacted) and of the secrets it
// references, and who asked from where.
func (a *AuditLog) Submitted(ctx context.Context, job contracts.Job, actor, clientIP string) error {
	detail := map[string]any{"priority": job.Priority, "kind": job.Kind, "stream_id": job.StreamID}
	if job.Kind == contracts.KindClaude {
		// The prompt is an element of the argv; keep only a fingerprint.
		argv, _ := json.Marshal(job.Command)
		sum := sha256.Sum256(argv)
		detail["command_sha256"] = hex.EncodeToString(sum[:])
	} else {
		detail["command"] = job.Command
	}
	// Which variables were set, never their values; secrets by name.
	if len(job.Env) > 0 {
		detail["env"] = contracts.RedactEnv(job.Env)
	}
	if len(job.SecretEnv) > 0 {
		detail["secret_env"] = job.SecretEnv
	}
	return a.Record(ctx, contracts.AuditRecord{
		ID: "submitted-" + job.ID, Time: job.SubmittedAt, Kind: contracts.AuditJobSubmitted,
		Actor: actor, Project: job.Project, ClientIP: clientIP, JobID: job.ID, Detail: detail,
		ProjectIncarnation: job.ProjectIncarnation,
	})
}
