package contracts

import "time"

// The audit log: every security-relevant act, appended once to StreamAudit
// on SubjectAudit(project, kind). Operators may subscribe to rdev.audit.>
// directly; GET /v1/audit reads the same records.
const (
	// SubjectAuditPrefix prefixes audit subjects: rdev.audit.<project>.<kind>.
	SubjectAuditPrefix = "rdev.audit"
	// AuditNoProject stands for the project token of records that concern
	// no single project (key changes, requests denied before a project is
	// known).
	AuditNoProject = "_"
	// StreamAudit is the append-only stream of AuditRecords.
	StreamAudit = "RDEV_AUDIT"
	// BucketAccess is the key-value bucket holding projects, API keys and
	// the stream-token secret: rdev's system of record for who may do what.
	BucketAccess = "rdev_access"
	// DefaultAuditMaxAge is how long audit records are kept.
	DefaultAuditMaxAge = 365 * 24 * time.Hour
)

// AuditKind names what an AuditRecord records.
type AuditKind string

// The audit kinds. Each is one subject token (no dots).
const (
	AuditJobSubmitted   AuditKind = "job_submitted"
	AuditJobFinished    AuditKind = "job_finished"
	AuditKeyCreated     AuditKind = "key_created"
	AuditKeyRevoked     AuditKind = "key_revoked"
	AuditProjectCreated AuditKind = "project_created"
	AuditProjectUpdated AuditKind = "project_updated"
	AuditProjectDeleted AuditKind = "project_deleted"
	AuditRequestDenied  AuditKind = "request_denied"
	// AuditJobCancelRequested and AuditBatchCancelRequested record who
	// asked to cancel (the job_finished record that follows says system).
	AuditJobCancelRequested   AuditKind = "job_cancel_requested"
	AuditBatchCancelRequested AuditKind = "batch_cancel_requested"
	// AuditJobRetried records who submitted a finished job again, and as
	// which job (the new job has its own job_submitted record too).
	AuditJobRetried AuditKind = "job_retried"
	// AuditDeadLetterRetried, AuditDeadLetterDeleted and
	// AuditDeadLettersPurged record the handling of dead letters.
	AuditDeadLetterRetried AuditKind = "dead_letter_retried"
	AuditDeadLetterDeleted AuditKind = "dead_letter_deleted"
	AuditDeadLettersPurged AuditKind = "dead_letters_purged"
	// AuditSecretSet and AuditSecretDeleted record changes of a project
	// secret: its name, never its value.
	AuditSecretSet     AuditKind = "secret_set"
	AuditSecretDeleted AuditKind = "secret_deleted"
	// AuditQueuePaused and AuditQueueResumed record who stopped or
	// restarted the dispatch of a priority level.
	AuditQueuePaused  AuditKind = "queue_paused"
	AuditQueueResumed AuditKind = "queue_resumed"
	// The webhook kinds record changes of a project's webhook endpoints;
	// AuditWebhookDisabled is rdev's own (actor "system"): a 410 answer
	// or a failing period disabled the endpoint.
	AuditWebhookCreated       AuditKind = "webhook_created"
	AuditWebhookUpdated       AuditKind = "webhook_updated"
	AuditWebhookDeleted       AuditKind = "webhook_deleted"
	AuditWebhookDisabled      AuditKind = "webhook_disabled"
	AuditWebhookSecretRotated AuditKind = "webhook_secret_rotated"
	// AuditScheduleCreated, AuditScheduleUpdated (paused and resumed
	// too), AuditScheduleDeleted and AuditScheduleTriggered record the
	// handling of cron schedules.
	AuditScheduleCreated   AuditKind = "schedule_created"
	AuditScheduleUpdated   AuditKind = "schedule_updated"
	AuditScheduleDeleted   AuditKind = "schedule_deleted"
	AuditScheduleTriggered AuditKind = "schedule_triggered"
	// AuditNATSCredentialsIssued records who got a NATS credential of a
	// project (POST /v1/projects/{p}/nats-credentials): its expiry and
	// inbox prefix, never its token.
	AuditNATSCredentialsIssued AuditKind = "nats_credentials_issued"
)

// AuditKinds lists every kind, for validation of filters.
func AuditKinds() []AuditKind {
	return []AuditKind{AuditJobSubmitted, AuditJobFinished, AuditJobRetried, AuditKeyCreated, AuditKeyRevoked,
		AuditProjectCreated, AuditProjectUpdated, AuditProjectDeleted, AuditRequestDenied,
		AuditJobCancelRequested, AuditBatchCancelRequested, AuditDeadLetterRetried, AuditDeadLetterDeleted, AuditDeadLettersPurged,
		AuditSecretSet, AuditSecretDeleted, AuditQueuePaused, AuditQueueResumed,
		AuditWebhookCreated, AuditWebhookUpdated, AuditWebhookDeleted, AuditWebhookDisabled, AuditWebhookSecretRotated,
		AuditScheduleCreated, AuditScheduleUpdated, AuditScheduleDeleted, AuditScheduleTriggered, AuditNATSCredentialsIssued}
}

// SubjectAudit is where an audit record about project ("" for none) of the
// given kind is published.
func SubjectAudit(project string, kind AuditKind) string {
	if project == "" {
		project = AuditNoProject
	}
	return SubjectAuditPrefix + "." + project + "." + string(kind)
}

// AuditRecord is one entry of the audit log.
type AuditRecord struct {
	// V is the message version (Version).
	V int `json:"v"`
	// ID identifies the record; it is also its Nats-Msg-Id, so a record
	// published twice is stored once.
	ID string `json:"id"`
	// Seq is the record's position in StreamAudit; set when read back.
	Seq uint64 `json:"seq,omitempty"`
	// Time is when the act happened.
	Time time.Time `json:"time"`
	// Kind is what happened.
	Kind AuditKind `json:"kind"`
	// Actor is the id of the API key that acted; "" when none was
	// presented or it was not valid; "system" for rdev's own acts.
	Actor string `json:"actor,omitempty"`
	// Project is the project concerned, if any.
	Project string `json:"project,omitempty"`
	// ClientIP is the address the request came from, as the API judged it.
	ClientIP string `json:"client_ip,omitempty"`
	// JobID is the job concerned, if any.
	JobID string `json:"job_id,omitempty"`
	// Detail holds what else is worth knowing for the kind: the argv or the
	// prompt's SHA-256 and priority of a submit, exit code and duration of
	// a finished job, the status and code of a denied request, the key id
	// created or revoked, the fields of a project that changed.
	Detail map[string]any `json:"detail,omitempty"`
	// ProjectIncarnation identifies the incarnation of Project this record
	// belongs to (access.Project.Incarnation): a project deleted and
	// created again under the same id is another incarnation, and does
	// not see the old one's records. Empty on records written before
	// incarnations.
	ProjectIncarnation string `json:"project_incarnation,omitempty"`
}
