module github.com/rdev-dev/rdev/pkg/lifecycle

go 1.26
