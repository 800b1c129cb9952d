package schema_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/rdev-dev/rdev/cmd/rdev/internal/schema"
)

const repoRoot = "../../../.."

// The committed schemas are part of the contract: this fails when a Go
// type changed and `make schema` was not run.
func TestCommittedSchemasAreUpToDate(t *testing.T) {
	t.Chdir(repoRoot)
	got, err := schema.Generate()
	if err != nil {
		t.Fatal(err)
	}
	committed, err := filepath.Glob(filepath.Join("pkg/contracts", "schema", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(committed) != len(got) {
		t.Errorf("%d committed schemas, %d generated: run make schema", len(committed), len(got))
	}
	for name, want := range got {
		have, err := os.ReadFile(filepath.Join("pkg/contracts", "schema", name))
		if err != nil || !bytes.Equal(have, want) {
			t.Errorf("schema/%s is out of date: run make schema", name)
		}
	}
}

func TestSchemasDescribeFields(t *testing.T) {
	t.Chdir(repoRoot)
	got, err := schema.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties map[string]struct {
			Description string `json:"description"`
		} `json:"properties"`
		Required []string `json:"required"`
	}
	if err := json.Unmarshal(got["output_line.json"], &s); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"v", "stream_id", "seq", "fd", "text", "time"} {
		if s.Properties[field].Description == "" {
			t.Errorf("output_line.%s has no description", field)
		}
	}
	if _, ok := s.Properties["raw"]; !ok {
		t.Error("output_line has no raw property")
	}
}
