package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/rdev-dev/rdev/cmd/rdev/internal/schema"
)

type schemaCmd struct {
	Out string `default:"pkg/contracts/schema" help:"Directory to write the schemas to."`
}

// The OpenAPI document, whose schemas and JSON form are regenerated, and
// the reference generated from it, relative to the repository root.
const (
	openAPIDir       = "pkg/contracts/openapi"
	openAPIReference = "docs/http-api-reference.md"
)

func (c *schemaCmd) Run(stdout io.Writer) error {
	files, err := schema.Generate()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(c.Out, n), files[n], 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", filepath.Join(c.Out, n))
	}
	return writeOpenAPI(stdout)
}

// writeOpenAPI regenerates openapi.yaml's schemas, openapi.json and the
// reference docs.
func writeOpenAPI(stdout io.Writer) error {
	specPath := filepath.Join(openAPIDir, "openapi.yaml")
	spec, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	specYAML, specJSON, err := schema.OpenAPI(spec)
	if err != nil {
		return err
	}
	ref, err := schema.Reference(specYAML)
	if err != nil {
		return err
	}
	for path, b := range map[string][]byte{specPath: specYAML, filepath.Join(openAPIDir, "openapi.json"): specJSON, openAPIReference: ref} {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", path)
	}
	return nil
}
