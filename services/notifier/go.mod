module github.com/rdev-dev/rdev/services/notifier

go 1.26.0

replace (
	github.com/rdev-dev/rdev/pkg/await => ../../pkg/await
	github.com/rdev-dev/rdev/pkg/contracts => ../../pkg/contracts
	github.com/rdev-dev/rdev/pkg/lifecycle => ../../pkg/lifecycle
	github.com/rdev-dev/rdev/pkg/state => ../../pkg/state
	github.com/rdev-dev/rdev/pkg/telemetry => ../../pkg/telemetry
	github.com/rdev-dev/rdev/pkg/topology => ../../pkg/topology
)

require (
	code.dny.dev/ssrf v0.3.0
	github.com/nats-io/nats-server/v2 v2.15.3
	github.com/nats-io/nats.go v1.56.0
	github.com/oklog/ulid/v2 v2.1.2
	github.com/rdev-dev/rdev/pkg/await v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/contracts v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/lifecycle v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/state v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/telemetry v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/topology v0.0.0-00010101000000-000000000000
	github.com/standard-webhooks/standard-webhooks/libraries v1.3.0
	go.opentelemetry.io/otel v1.47.0
	go.opentelemetry.io/otel/metric v1.47.0
	go.opentelemetry.io/otel/trace v1.47.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/antithesishq/antithesis-sdk-go v0.9.0-default-no-op // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/nats-io/jwt/v2 v2.8.3 // indirect
	github.com/nats-io/nkeys v0.4.17 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)
