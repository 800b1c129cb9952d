module github.com/rdev-dev/rdev/pkg/contracts

go 1.26
