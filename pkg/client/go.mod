module github.com/rdev-dev/rdev/pkg/client

go 1.26.0

replace github.com/rdev-dev/rdev/pkg/await => ../await

replace github.com/rdev-dev/rdev/pkg/contracts => ../contracts

require (
	github.com/rdev-dev/rdev/pkg/await v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/contracts v0.0.0-00010101000000-000000000000
	github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest v0.0.0-00010101000000-000000000000
)

require go.uber.org/goleak v1.3.0

replace github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest => ../contracts/openapi/openapitest
