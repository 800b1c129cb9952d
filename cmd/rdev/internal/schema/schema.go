// Package schema generates the JSON Schemas of pkg/contracts' messages
// from the Go types and their doc comments, for subscribers in other
// languages.
package schema

import (
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/invopop/jsonschema"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// repoImport is the import path of the repository root: the comment reader
// names packages by joining it with the relative source directory.
const repoImport = "github.com/rdev-dev/rdev"

// Generate returns each message's schema by file name. It must run in the
// repository root: pkg/contracts is read from there for descriptions.
func Generate() (map[string][]byte, error) {
	r, err := reflector(true)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for name, v := range messages() {
		s := r.Reflect(v)
		s.ID = jsonschema.ID("https://rdev.dev/schema/v1/" + name + ".json")
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return nil, err
		}
		out[name+".json"] = append(b, '\n')
	}
	return out, nil
}

// reflector reads the Go types and their doc comments; expanded puts a
// type's own fields at the top of its schema instead of a $ref to $defs.
func reflector(expanded bool) (*jsonschema.Reflector, error) {
	r := &jsonschema.Reflector{
		// Readers must ignore fields they do not know (see contracts.Version).
		AllowAdditionalProperties: true,
		ExpandedStruct:            expanded,
		Mapper:                    mapType,
	}
	if err := r.AddGoComments(repoImport, "pkg/contracts"); err != nil {
		return nil, fmt.Errorf("read contracts comments: %w", err)
	}
	return r, nil
}

// messages are the types with a schema, by file name without ".json".
func messages() map[string]any {
	return map[string]any{
		"job":            contracts.Job{},
		"output_line":    contracts.OutputLine{},
		"event":          contracts.Event{},
		"job_state":      contracts.JobState{},
		"stream_ref":     contracts.StreamRef{},
		"error_body":     contracts.ErrorBody{},
		"sse_connected":  contracts.SSEConnectedData{},
		"audit_record":   contracts.AuditRecord{},
		"dead_letter":    contracts.DeadLetter{},
		"batch":          contracts.Batch{},
		"batch_progress": contracts.BatchProgress{},
		"sealed_secret":  contracts.SealedSecret{},
		// Replay over NATS (direct subscribers).
		"replay_request": contracts.ReplayRequest{},
		"replay_reply":   contracts.ReplayReply{},
		// The bodies of the HTTP API (versioned by its /v1 path).
		"command_request":       contracts.CommandRequest{},
		"claude_request":        contracts.ClaudeRequest{},
		"batch_item":            contracts.BatchItem{},
		"submit_response":       contracts.SubmitResponse{},
		"job_response":          contracts.JobResponse{},
		"batch_response":        contracts.BatchResponse{},
		"batch_refused":         contracts.BatchRefused{},
		"batch_status":          contracts.BatchStatus{},
		"batch_cancel_response": contracts.BatchCancelResponse{},
		"batch_complete":        contracts.BatchComplete{},
		"sse_gap":               contracts.SSEGapData{},
		"sse_project_connected": contracts.SSEProjectConnectedData{},
		"project":               contracts.Project{},
		"project_request":       contracts.ProjectRequest{},
		"project_patch":         contracts.ProjectPatch{},
		"project_list":          contracts.ProjectList{},
		"key_request":           contracts.KeyRequest{},
		"key":                   contracts.Key{},
		"key_list":              contracts.KeyList{},
		"secret_request":        contracts.SecretRequest{},
		"secret_list":           contracts.SecretList{},
		"audit_page":            contracts.AuditPage{},
		"dead_letter_page":      contracts.DeadLetterPage{},
		"job_summary":           contracts.JobSummary{},
		"job_list":              contracts.JobList{},
		"queue_list":            contracts.QueueList{},
		"nats_credentials":      contracts.NATSCredentials{},
		"queue_pause":           contracts.QueuePause{},
		"dead_letter_retry_all": contracts.DeadLetterRetryAll{},
		"dead_letter_purge":     contracts.DeadLetterPurge{},
		// Webhooks: the endpoints' API bodies, the stored records and the
		// body of every delivery.
		"webhook_request":         contracts.WebhookRequest{},
		"webhook_patch":           contracts.WebhookPatch{},
		"webhook":                 contracts.Webhook{},
		"webhook_created":         contracts.WebhookCreated{},
		"webhook_rotated":         contracts.WebhookRotated{},
		"webhook_list":            contracts.WebhookList{},
		"webhook_record":          contracts.WebhookRecord{},
		"webhook_delivery":        contracts.WebhookDelivery{},
		"webhook_delivery_record": contracts.WebhookDeliveryRecord{},
		"webhook_delivery_page":   contracts.WebhookDeliveryPage{},
		"webhook_payload":         contracts.WebhookPayload{},
		"schedule_request":        contracts.ScheduleRequest{},
		"schedule_patch":          contracts.SchedulePatch{},
		"schedule":                contracts.Schedule{},
		"schedule_response":       contracts.ScheduleResponse{},
		"schedule_list":           contracts.ScheduleList{},
		"schedule_run":            contracts.ScheduleRun{},
	}
}

// mapType gives the schema of types whose JSON is not their Go fields'.
func mapType(t reflect.Type) *jsonschema.Schema {
	if t != reflect.TypeFor[contracts.EnvValue]() {
		return nil
	}
	secret := jsonschema.NewProperties()
	secret.Set("secret", &jsonschema.Schema{Type: "string", MinLength: ptr(uint64(1)), Description: "the name of a project secret"})
	return &jsonschema.Schema{
		Description: `a plain value, or {"secret":"<name>"}: the project secret of that name, resolved by the worker`,
		OneOf: []*jsonschema.Schema{
			{Type: "string"},
			{Type: "object", Properties: secret, Required: []string{"secret"}, AdditionalProperties: jsonschema.FalseSchema},
		},
	}
}

func ptr[T any](v T) *T { return &v }
