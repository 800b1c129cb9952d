// Package openapi holds the OpenAPI 3.1 description of rdev's HTTP API:
// openapi.yaml, written by hand but for its components.schemas, which
// `make schema` reflects from pkg/contracts' Go types, and openapi.json,
// the same document as JSON, embedded here so the API serves it without a
// YAML parser.
package openapi

import _ "embed"

//go:embed openapi.json
var document []byte

// JSON returns the OpenAPI document as JSON, a copy the caller may keep.
func JSON() []byte { return append([]byte(nil), document...) }
