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
	return nil
}
