module github.com/rdev-dev/rdev/services/api

go 1.26.0

replace github.com/rdev-dev/rdev/pkg/contracts => ../../pkg/contracts

replace github.com/rdev-dev/rdev/pkg/topology => ../../pkg/topology

require (
	github.com/distribution/reference v0.6.0
	github.com/labstack/echo/v4 v4.16.0
	github.com/maypok86/otter/v2 v2.4.0
	github.com/nats-io/nats.go v1.56.0
	github.com/oklog/ulid/v2 v2.1.2
	github.com/rdev-dev/rdev/pkg/contracts v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/topology v0.0.0-00010101000000-000000000000
	github.com/redis/go-redis/extra/redisotel/v9 v9.23.0
	github.com/redis/go-redis/v9 v9.23.0
	github.com/robfig/cron/v3 v3.0.1
	github.com/sony/gobreaker/v2 v2.4.0
	github.com/standard-webhooks/standard-webhooks/libraries v1.3.0
	go.opentelemetry.io/otel v1.47.0
	go.opentelemetry.io/otel/metric v1.47.0
	go.opentelemetry.io/otel/trace v1.47.0
	go.uber.org/goleak v1.3.0
	k8s.io/apimachinery v0.37.2
)

require (
	github.com/fxamacker/cbor/v2 v2.9.1 // indirect
	github.com/getkin/kin-openapi v0.153.0 // indirect
	github.com/go-logr/logr v1.4.4 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/go-openapi/jsonpointer v1.0.0 // indirect
	github.com/gorilla/mux v1.8.0 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/redis/go-redis/extra/rediscmd/v9 v9.23.0 // indirect
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3 // indirect
	github.com/x448/float16 v0.8.4 // indirect
	go.opentelemetry.io/auto/sdk v1.2.1 // indirect
	go.opentelemetry.io/otel/log v1.47.0 // indirect
	go.yaml.in/yaml/v4 v4.0.0 // indirect
	gopkg.in/inf.v0 v0.9.1 // indirect
	sigs.k8s.io/json v0.0.0-20250730193827-2d320260d730 // indirect
)

require (
	github.com/antithesishq/antithesis-sdk-go v0.9.0-default-no-op // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/labstack/gommon v0.5.0 // indirect
	github.com/mattn/go-colorable v0.1.15 // indirect
	github.com/mattn/go-isatty v0.0.22 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/nats-io/jwt/v2 v2.8.3
	github.com/nats-io/nats-server/v2 v2.15.3
	github.com/nats-io/nkeys v0.4.17
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/rdev-dev/rdev/pkg/access v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/await v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/lifecycle v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/state v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/telemetry v0.0.0-00010101000000-000000000000
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	github.com/valyala/fasttemplate v1.2.2 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)

replace github.com/rdev-dev/rdev/pkg/access => ../../pkg/access

replace github.com/rdev-dev/rdev/pkg/telemetry => ../../pkg/telemetry

replace github.com/rdev-dev/rdev/pkg/state => ../../pkg/state

replace github.com/rdev-dev/rdev/pkg/await => ../../pkg/await

replace github.com/rdev-dev/rdev/pkg/lifecycle => ../../pkg/lifecycle

replace github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest => ../../pkg/contracts/openapi/openapitest
