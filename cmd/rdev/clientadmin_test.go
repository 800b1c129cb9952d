package main

import (
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The admin commands on a real node: projects, keys (the secret shown
// once, never listed), the audit log, dead letters.
func TestAdminCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	env := serverEnv(n)
	cli := func(args ...string) string {
		t.Helper()
		return runOK(t, env, args...)
	}
	cli("projects", "create", "adm", "--max-concurrent-jobs", "2")
	if ps := mustJSON[[]contracts.Project](t, cli("projects", "ls", "-o", "json")); len(ps) != 1 || ps[0].ID != "adm" || ps[0].MaxConcurrentJobs != 2 {
		t.Fatalf("projects %+v", ps)
	}
	k := mustJSON[contracts.Key](t, cli("keys", "create", "ci", "--scope", "project:adm:submit", "-o", "json"))
	if !strings.HasPrefix(k.Key, "rdev_") {
		t.Fatalf("created key %+v", k)
	}
	if ls := cli("keys", "ls"); !strings.Contains(ls, k.ID) || strings.Contains(ls, k.Key) {
		t.Fatalf("keys ls %q: want the id, never the secret", ls)
	}
	if dls := mustJSON[contracts.DeadLetterPage](t, cli("dead-letters", "ls", "-p", "adm", "-o", "json")); len(dls.DeadLetters) != 0 {
		t.Fatalf("dead letters %+v of a project without jobs", dls)
	}
	if _, stderr, code := runCLI(t, env, "dead-letters", "retry", "nosuch"); code != 1 || !strings.Contains(stderr, "404") {
		t.Fatalf("retry of an unknown letter: exit %d, %s", code, stderr)
	}
	if out := cli("audit", "--limit", "1000"); !strings.Contains(out, "project_created") || !strings.Contains(out, "key_created") {
		t.Fatalf("audit %q", out)
	}
	if out := cli("keys", "revoke", k.ID); !strings.Contains(out, "revoked") {
		t.Fatalf("revoke printed %q", out)
	}
}
