package contracts

import (
	"regexp"
	"time"
)

// Webhooks: a project's endpoints are told of its jobs' lifecycle by the
// notifier, signed per the Standard Webhooks specification
// (https://www.standardwebhooks.com): headers webhook-id (the delivery's
// id, constant across retries), webhook-timestamp and webhook-signature
// ("v1,<base64 HMAC-SHA256 of id.timestamp.body>", several separated by
// spaces while a rotated secret overlaps). Endpoints live in
// BucketWebhooks, deliveries (and the notifier's per-endpoint leases) in
// BucketWebhookDeliveries.
const (
	// BucketWebhooks holds WebhookRecords under WebhookKey(project, id).
	BucketWebhooks = "rdev_webhooks"
	// BucketWebhookDeliveries holds WebhookDeliveryRecords under
	// WebhookDeliveryKey(endpoint, delivery) and the notifier's endpoint
	// leases under WebhookLeaseKey(endpoint).
	BucketWebhookDeliveries = "rdev_webhook_deliveries"
	// DefaultWebhookDeliveryTTL is how long a delivery stays readable
	// after its last change: longer than the default retry bound (3 days)
	// and the default failing period that disables an endpoint (5 days).
	DefaultWebhookDeliveryTTL = 14 * 24 * time.Hour
	// ConsumerNotifierEvents is the durable consumer of lifecycle events
	// (rdev.events.> in StreamOutput) shared by every notifier.
	ConsumerNotifierEvents = "rdev-notifier-events"
	// ConsumerNotifierDead is the durable consumer of dead letters
	// (rdev.dead.> in StreamDead) shared by every notifier.
	ConsumerNotifierDead = "rdev-notifier-dead"
	// WebhookSecretPrefix starts every signing secret: "whsec_" and the
	// base64 of its random bytes, as the specification's libraries read it.
	WebhookSecretPrefix = "whsec_"
	// WebhookResponseBodyBytes bounds the response body kept per attempt.
	WebhookResponseBodyBytes = 4 << 10
	// MaxWebhooksPerProject bounds a project's endpoints.
	MaxWebhooksPerProject = 50
	// MaxWebhookURLBytes bounds an endpoint's URL.
	MaxWebhookURLBytes = 2048
)

// WebhookKey is the BucketWebhooks key of a project's endpoint.
func WebhookKey(project, id string) string { return "endpoint." + project + "." + id }

// WebhookKeyPrefix is the prefix of every BucketWebhooks key of project.
func WebhookKeyPrefix(project string) string { return "endpoint." + project + "." }

// WebhookDeliveryKey is the BucketWebhookDeliveries key of a delivery to
// an endpoint.
func WebhookDeliveryKey(endpoint, delivery string) string {
	return "delivery." + endpoint + "." + delivery
}

// WebhookDeliveryKeyPrefix is the prefix of every delivery key of an
// endpoint.
func WebhookDeliveryKeyPrefix(endpoint string) string { return "delivery." + endpoint + "." }

// WebhookLeaseKey is the BucketWebhookDeliveries key of the lease a
// notifier holds on an endpoint: only the holder sends its deliveries.
func WebhookLeaseKey(endpoint string) string { return "lease." + endpoint }

// WebhookSecretAAD binds a sealed signing secret to its endpoint.
func WebhookSecretAAD(project, id string) []byte {
	return []byte("rdev-webhook-secret\x00" + project + "\x00" + id)
}

// WebhookEventType names what a webhook tells.
type WebhookEventType string

// The webhook event types. An endpoint subscribes to some of them; Ping is
// sent by POST .../test only.
const (
	WebhookJobStarted      WebhookEventType = "job.started"
	WebhookJobSucceeded    WebhookEventType = "job.succeeded"
	WebhookJobFailed       WebhookEventType = "job.failed"
	WebhookJobCancelled    WebhookEventType = "job.cancelled"
	WebhookJobTimedOut     WebhookEventType = "job.timed_out"
	WebhookJobRetrying     WebhookEventType = "job.retrying"
	WebhookJobDeadLettered WebhookEventType = "job.dead_lettered"
	WebhookBatchCompleted  WebhookEventType = "batch.completed"
	WebhookPing            WebhookEventType = "ping"
)

// WebhookEventTypes lists the types an endpoint may subscribe to.
func WebhookEventTypes() []WebhookEventType {
	return []WebhookEventType{WebhookJobStarted, WebhookJobSucceeded, WebhookJobFailed, WebhookJobCancelled,
		WebhookJobTimedOut, WebhookJobRetrying, WebhookJobDeadLettered, WebhookBatchCompleted}
}

// WebhookEventFor is the webhook type of a lifecycle event, false for
// those no webhook tells (queued).
func WebhookEventFor(t EventType) (WebhookEventType, bool) {
	switch t {
	case EventStarted, EventSucceeded, EventFailed, EventCancelled, EventTimedOut, EventRetrying:
		return WebhookEventType("job." + string(t)), true
	}
	return "", false
}

var webhookIDPattern = regexp.MustCompile(`^wh_[A-Za-z0-9]{1,40}$`)

// ValidWebhookID reports whether s can be an endpoint id ("wh_" and
// letters or digits).
func ValidWebhookID(s string) bool { return webhookIDPattern.MatchString(s) }

// WebhookDisabled says why an endpoint stopped receiving.
const (
	// WebhookDisabledGone: a delivery was answered 410 Gone.
	WebhookDisabledGone = "gone"
	// WebhookDisabledFailing: deliveries failed for the whole failing
	// period (--webhook-disable-after).
	WebhookDisabledFailing = "failing"
)

// Webhook is an endpoint as the API shows it (never its secret).
type Webhook struct {
	// ID identifies the endpoint ("wh_…").
	ID string `json:"id"`
	// Project is the project whose jobs it is told of.
	Project string `json:"project"`
	// URL receives the deliveries (http or https).
	URL string `json:"url"`
	// Events are the subscribed event types.
	Events []WebhookEventType `json:"events"`
	// Description is for people.
	Description string `json:"description,omitempty"`
	// Active says deliveries are sent. An inactive endpoint is told of
	// nothing new; its pending deliveries wait until it is active again.
	Active bool `json:"active"`
	// DisabledReason says why rdev set Active to false (WebhookDisabledGone
	// or WebhookDisabledFailing); empty when a user did, or it is active.
	DisabledReason string `json:"disabled_reason,omitempty"`
	// DisabledAt is when rdev disabled it.
	DisabledAt *time.Time `json:"disabled_at,omitempty"`
	// FailingSince is when deliveries began failing without a success
	// since; absent while healthy.
	FailingSince *time.Time `json:"failing_since,omitempty"`
	// PreviousSecretExpiresAt is, after a rotation, when the previous
	// secret stops signing beside the current one.
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at,omitempty"`
	// CreatedAt is when it was created.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is when it last changed.
	UpdatedAt time.Time `json:"updated_at"`
}

// WebhookSecret is one signing secret as stored: sealed with the secrets
// key (package seal) and WebhookSecretAAD.
type WebhookSecret struct {
	// Sealed is the secret's raw bytes, sealed.
	Sealed []byte `json:"sealed"`
	// ExpiresAt, on a rotated-out secret, is when it stops signing.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// WebhookRecord is an endpoint as stored in BucketWebhooks.
type WebhookRecord struct {
	// V is the message version (Version).
	V int `json:"v"`
	Webhook
	// Secrets sign deliveries: the current one first, then those rotated
	// out and not yet expired.
	Secrets []WebhookSecret `json:"secrets"`
	// ProjectIncarnation is the incarnation of Project it belongs to.
	ProjectIncarnation string `json:"project_incarnation,omitempty"`
}

// WebhookRequest is the body of POST /v1/projects/{p}/webhooks.
type WebhookRequest struct {
	// URL receives the deliveries: http or https.
	URL string `json:"url"`
	// Events are the subscribed event types (at least one).
	Events []WebhookEventType `json:"events"`
	// Description is for people.
	Description string `json:"description,omitempty"`
	// Active defaults to true.
	Active *bool `json:"active,omitempty"`
}

// WebhookPatch is the body of PATCH /v1/projects/{p}/webhooks/{id}: the
// fields present replace the endpoint's. Setting active true clears a
// disable by rdev.
type WebhookPatch struct {
	// URL replaces the endpoint's URL.
	URL *string `json:"url,omitempty"`
	// Events replaces the subscribed event types (at least one).
	Events *[]WebhookEventType `json:"events,omitempty"`
	// Description replaces the description.
	Description *string `json:"description,omitempty"`
	// Active turns deliveries on or off.
	Active *bool `json:"active,omitempty"`
}

// WebhookCreated answers a create: the endpoint, and its signing secret,
// shown this once.
type WebhookCreated struct {
	Webhook
	// Secret is the signing secret ("whsec_" and base64).
	Secret string `json:"secret"`
}

// WebhookRotated answers POST .../rotate-secret: the new secret, shown
// this once, and until when the previous one keeps signing beside it.
type WebhookRotated struct {
	// Secret is the new signing secret.
	Secret string `json:"secret"`
	// PreviousSecretExpiresAt is when the previous secret stops signing.
	PreviousSecretExpiresAt time.Time `json:"previous_secret_expires_at"`
}

// WebhookList answers GET /v1/projects/{p}/webhooks.
type WebhookList struct {
	// Webhooks are the project's endpoints, oldest first, never null.
	Webhooks []Webhook `json:"webhooks"`
}

// DeliveryStatus is where a delivery stands.
type DeliveryStatus string

// The delivery states. Only pending changes.
const (
	// DeliveryPending: not yet accepted; an attempt is due at NextAttemptAt.
	DeliveryPending DeliveryStatus = "pending"
	// DeliverySucceeded: the endpoint answered 2xx.
	DeliverySucceeded DeliveryStatus = "succeeded"
	// DeliveryFailed: final refusal (a 3xx, 4xx other than 429, or a
	// target the SSRF rules refuse).
	DeliveryFailed DeliveryStatus = "failed"
	// DeliveryExhausted: retries ran out of the retry schedule or bound.
	DeliveryExhausted DeliveryStatus = "exhausted"
)

// Final reports whether s no longer changes by itself.
func (s DeliveryStatus) Final() bool { return s != DeliveryPending && s != "" }

// WebhookDelivery is a delivery as listed.
type WebhookDelivery struct {
	// ID is the delivery's id, sent as webhook-id on every attempt (the
	// receiver's idempotency key).
	ID string `json:"id"`
	// Webhook is the endpoint's id.
	Webhook string `json:"webhook"`
	// Project is the endpoint's project.
	Project string `json:"project"`
	// Type is the event type delivered.
	Type WebhookEventType `json:"type"`
	// JobID is the job the event is about (job.* events).
	JobID string `json:"job_id,omitempty"`
	// BatchID is the batch of batch.completed, or the job's.
	BatchID string `json:"batch_id,omitempty"`
	// Status is pending, succeeded, failed or exhausted.
	Status DeliveryStatus `json:"status"`
	// Attempts counts the attempts made.
	Attempts int `json:"attempts"`
	// LastStatusCode is the last attempt's HTTP status (0: no response).
	LastStatusCode int `json:"last_status_code,omitempty"`
	// LastLatencyMS is the last attempt's duration.
	LastLatencyMS int64 `json:"last_latency_ms,omitempty"`
	// LastError says why the last attempt failed without a response, or
	// was refused.
	LastError string `json:"last_error,omitempty"`
	// NextAttemptAt is when a pending delivery is tried next.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	// CreatedAt is when the event was taken up for the endpoint.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is the last change.
	UpdatedAt time.Time `json:"updated_at"`
}

// WebhookAttempt is one try of a delivery.
type WebhookAttempt struct {
	// At is when the request started.
	At time.Time `json:"at"`
	// RequestHeaders are the headers sent (webhook-signature included:
	// a signature reveals nothing of the secret).
	RequestHeaders map[string]string `json:"request_headers"`
	// StatusCode is the response's status (0: no response).
	StatusCode int `json:"status_code,omitempty"`
	// ResponseHeaders are the response's headers.
	ResponseHeaders map[string]string `json:"response_headers,omitempty"`
	// ResponseBody is the first WebhookResponseBodyBytes of the body.
	ResponseBody string `json:"response_body,omitempty"`
	// LatencyMS is how long the attempt took.
	LatencyMS int64 `json:"latency_ms"`
	// Error says why there was no (acceptable) response.
	Error string `json:"error,omitempty"`
}

// WebhookDeliveryRecord is a delivery as stored in
// BucketWebhookDeliveries, and as GET .../deliveries/{id} answers it.
type WebhookDeliveryRecord struct {
	// V is the message version (Version).
	V int `json:"v"`
	WebhookDelivery
	// OrderKey groups deliveries that go out one after the other in
	// creation order: a job's (its id), a batch's, a ping's own.
	OrderKey string `json:"order_key"`
	// Source orders deliveries of one OrderKey: the stream sequence of
	// the event they tell.
	Source uint64 `json:"source"`
	// QueuedAt is when the delivery was created or last redelivered: the
	// retry bound counts from it.
	QueuedAt time.Time `json:"queued_at"`
	// Body is the request body, the same on every attempt.
	Body string `json:"body"`
	// TraceParent is the W3C trace context of the job, for the attempt
	// spans.
	TraceParent map[string]string `json:"trace,omitempty"`
	// AttemptLog holds every attempt, oldest first (the last 50).
	AttemptLog []WebhookAttempt `json:"attempt_log"`
}

// WebhookDeliveryPage answers GET .../deliveries, newest first.
type WebhookDeliveryPage struct {
	// Deliveries are the page's deliveries, never null.
	Deliveries []WebhookDelivery `json:"deliveries"`
	// NextCursor, when set, is the cursor of the next page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// WebhookPayloadVersion is the version of WebhookPayload.
const WebhookPayloadVersion = 1

// WebhookPayload is the JSON body of every delivery, in the Standard
// Webhooks shape (type, timestamp, data).
type WebhookPayload struct {
	// V is the payload version (WebhookPayloadVersion).
	V int `json:"v"`
	// Type is what happened.
	Type WebhookEventType `json:"type"`
	// Timestamp is when it happened.
	Timestamp time.Time `json:"timestamp"`
	// Data describes the job or batch.
	Data WebhookData `json:"data"`
}

// WebhookData is the subject of a webhook: a job, or a batch.
type WebhookData struct {
	// Project is the job's or batch's project.
	Project string `json:"project"`
	// JobID is the job (job.* events).
	JobID string `json:"job_id,omitempty"`
	// StreamID is the job's output stream.
	StreamID string `json:"stream_id,omitempty"`
	// BatchID is the batch: the batch of batch.completed, or the job's.
	BatchID string `json:"batch_id,omitempty"`
	// Status is the job's status after the event.
	Status Status `json:"status,omitempty"`
	// Attempt is the job's attempt, from 1.
	Attempt int `json:"attempt,omitempty"`
	// ExitCode is the command's exit status, when it exited.
	ExitCode *int `json:"exit_code,omitempty"`
	// Reason explains a failure (a Reason constant).
	Reason string `json:"reason,omitempty"`
	// Message details Reason.
	Message string `json:"message,omitempty"`
	// DurationMS is the attempt's run time, on terminal events.
	DurationMS int64 `json:"duration_ms,omitempty"`
	// Lines is how many output lines the job stored.
	Lines uint64 `json:"lines,omitempty"`
	// RetryInSeconds is, on job.retrying, when the next attempt may start.
	RetryInSeconds int `json:"retry_in_seconds,omitempty"`
	// TraceID is the job's W3C trace id.
	TraceID string `json:"trace_id,omitempty"`
	// Jobs is, on batch.completed, how many jobs the batch has.
	Jobs int `json:"jobs,omitempty"`
	// Counts is, on batch.completed, how many ended in each status.
	Counts map[Status]int `json:"counts,omitempty"`
	// Links point at the API's resources.
	Links WebhookLinks `json:"links"`
}

// WebhookLinks are API paths about the webhook's subject.
type WebhookLinks struct {
	// Job is the job's resource.
	Job string `json:"job,omitempty"`
	// Events is the job's (or batch's) SSE stream.
	Events string `json:"events,omitempty"`
	// Batch is the batch's resource.
	Batch string `json:"batch,omitempty"`
}
