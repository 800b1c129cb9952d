module github.com/rdev-dev/rdev/bench

go 1.26.0

replace (
	github.com/rdev-dev/rdev/pkg/client => ../pkg/client
	github.com/rdev-dev/rdev/pkg/contracts => ../pkg/contracts
	github.com/rdev-dev/rdev/pkg/topology => ../pkg/topology
)

require (
	github.com/hibiken/asynq v0.26.0
	github.com/nats-io/nats.go v1.55.0
	github.com/rdev-dev/rdev/pkg/client v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/contracts v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/topology v0.0.0-00010101000000-000000000000
	github.com/redis/go-redis/v9 v9.14.1
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dgryski/go-rendezvous v0.0.0-20200823014737-9f7001d12a5f // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/robfig/cron/v3 v3.0.1 // indirect
	github.com/spf13/cast v1.10.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/time v0.14.0 // indirect
	google.golang.org/protobuf v1.36.10 // indirect
)
