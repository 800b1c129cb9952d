module github.com/rdev-dev/rdev/services/streamer

go 1.26.0

replace github.com/rdev-dev/rdev/pkg/contracts => ../../pkg/contracts

replace github.com/rdev-dev/rdev/pkg/topology => ../../pkg/topology

require (
	github.com/labstack/echo/v4 v4.16.0
	github.com/nats-io/nats.go v1.56.0
	github.com/rdev-dev/rdev/pkg/contracts v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/topology v0.0.0-00010101000000-000000000000
	go.opentelemetry.io/otel v1.47.0
	go.opentelemetry.io/otel/metric v1.47.0
	go.opentelemetry.io/otel/trace v1.47.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/getkin/kin-openapi v0.153.0 // indirect
	github.com/go-openapi/jsonpointer v1.0.0 // indirect
	github.com/gorilla/mux v1.8.1 // indirect
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	go.yaml.in/yaml/v4 v4.0.0 // indirect
)

require (
	github.com/antithesishq/antithesis-sdk-go v0.9.0-default-no-op // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/labstack/gommon v0.5.0 // indirect
	github.com/mattn/go-colorable v0.1.15 // indirect
	github.com/mattn/go-isatty v0.0.22 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/nats-io/jwt/v2 v2.8.3 // indirect
	github.com/nats-io/nats-server/v2 v2.15.3
	github.com/nats-io/nkeys v0.4.17 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/rdev-dev/rdev/pkg/access v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/await v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/lifecycle v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/state v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/telemetry v0.0.0-00010101000000-000000000000
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	github.com/valyala/fasttemplate v1.2.2 // indirect
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.44.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)

replace github.com/rdev-dev/rdev/pkg/access => ../../pkg/access

replace github.com/rdev-dev/rdev/pkg/telemetry => ../../pkg/telemetry

replace github.com/rdev-dev/rdev/pkg/state => ../../pkg/state

replace github.com/rdev-dev/rdev/pkg/await => ../../pkg/await

replace github.com/rdev-dev/rdev/pkg/lifecycle => ../../pkg/lifecycle

replace github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest => ../../pkg/contracts/openapi/openapitest
