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

// openapi.yaml's schemas, openapi.json and the reference docs are
// generated: this fails when a Go type or the paths changed and `make
// schema` was not run.
func TestCommittedOpenAPIIsUpToDate(t *testing.T) {
	t.Chdir(repoRoot)
	spec, err := os.ReadFile("pkg/contracts/openapi/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	specYAML, specJSON, err := schema.OpenAPI(spec)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := schema.Reference(specYAML)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]byte{
		"pkg/contracts/openapi/openapi.yaml": specYAML,
		"pkg/contracts/openapi/openapi.json": specJSON,
		"docs/http-api-reference.md":         ref,
	} {
		if have, err := os.ReadFile(path); err != nil || !bytes.Equal(have, want) {
			t.Errorf("%s is out of date: run make schema", path)
		}
	}
}

func TestOpenAPINeedsTheMarker(t *testing.T) {
	t.Chdir(repoRoot)
	if _, _, err := schema.OpenAPI([]byte("openapi: 3.1.0\n")); err == nil {
		t.Fatal("a spec without the generated part's marker was accepted")
	}
}
