module github.com/rdev-dev/rdev/pkg/await

go 1.26.0
