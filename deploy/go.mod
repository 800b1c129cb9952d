module github.com/rdev-dev/rdev/deploy

go 1.26.8

require (
	github.com/google/shlex v0.0.0-20191202100458-e7afc7fbc510
	github.com/moby/buildkit v0.34.2
	github.com/moby/patternmatcher v0.6.1
	go.uber.org/goleak v1.3.0
)

require (
	github.com/containerd/typeurl/v2 v2.3.0 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/planetscale/vtprotobuf v0.6.1-0.20240319094008-0393e58bdf10 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/rdev-dev/rdev/pkg/topology => ../pkg/topology

replace github.com/rdev-dev/rdev/pkg/contracts => ../pkg/contracts
