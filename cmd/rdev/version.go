package main

import (
	"cmp"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set at build time by the Dockerfile and release builds:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=abc -X main.date=2026-12-04T00:00:00Z"
//
// Empty ones fall back to what the Go toolchain recorded in the binary.
var (
	version string
	commit  string
	date    string
)

type versionCmd struct{}

func (versionCmd) Run(stdout io.Writer) error {
	v, c, d := buildVersion()
	_, err := fmt.Fprintf(stdout, "rdev %s\ncommit %s\nbuilt %s\n%s\n", v, c, d, runtime.Version())
	return err
}

// buildVersion returns version, commit and build date: the -X values,
// else the module version and VCS stamp of the build, else "unknown".
func buildVersion() (v, c, d string) {
	v, c, d = version, commit, date
	if info, ok := debug.ReadBuildInfo(); ok {
		if info.Main.Version != "(devel)" {
			v = cmp.Or(v, info.Main.Version)
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				c = cmp.Or(c, s.Value)
			case "vcs.time":
				d = cmp.Or(d, s.Value)
			}
		}
	}
	return cmp.Or(v, "unknown"), cmp.Or(c, "unknown"), cmp.Or(d, "unknown")
}
