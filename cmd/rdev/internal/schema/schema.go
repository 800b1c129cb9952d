// Package schema generates the JSON Schemas of pkg/contracts' messages
// from the Go types and their doc comments, for subscribers in other
// languages.
package schema

import (
	"encoding/json"
	"fmt"

	"github.com/invopop/jsonschema"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// repoImport is the import path of the repository root: the comment reader
// names packages by joining it with the relative source directory.
const repoImport = "github.com/rdev-dev/rdev"

// Generate returns each message's schema by file name. It must run in the
// repository root: pkg/contracts is read from there for descriptions.
func Generate() (map[string][]byte, error) {
	r := &jsonschema.Reflector{
		// Readers must ignore fields they do not know (see contracts.Version).
		AllowAdditionalProperties: true,
		ExpandedStruct:            true,
	}
	if err := r.AddGoComments(repoImport, "pkg/contracts"); err != nil {
		return nil, fmt.Errorf("read contracts comments: %w", err)
	}
	out := map[string][]byte{}
	for name, v := range map[string]any{
		"job":           contracts.Job{},
		"output_line":   contracts.OutputLine{},
		"event":         contracts.Event{},
		"job_state":     contracts.JobState{},
		"stream_ref":    contracts.StreamRef{},
		"error_body":    contracts.ErrorBody{},
		"sse_connected": contracts.SSEConnectedData{},
		"audit_record":  contracts.AuditRecord{},
		"dead_letter":   contracts.DeadLetter{},
		"batch":         contracts.Batch{},
		"sealed_secret": contracts.SealedSecret{},
	} {
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
