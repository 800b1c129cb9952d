package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `rdev batch submit --follow` of 1,000 jobs: all accepted, followed to
// the end, a summary by status; one failing job makes the exit 1; a bad
// file is refused before anything is sent.
func TestBatchSubmitThousandJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t, "--concurrency", "8")
	createProject(t, n, "batch")
	dir := t.TempDir()
	var b strings.Builder
	for i := range 999 {
		fmt.Fprintf(&b, "{\"command\":[\"echo\",\"%d\"]}\n", i)
	}
	b.WriteString(`{"command":["false"]}` + "\n")
	file := filepath.Join(dir, "jobs.jsonl")
	must(t, os.WriteFile(file, []byte(b.String()), 0o600), "write batch")
	out, stderr, code := runCLI(t, serverEnv(n), "batch", "submit", "-p", "batch", "--follow", file)
	fields := strings.Fields(out)
	count := func(status string) string {
		for i, f := range fields {
			if f == status && i > 0 {
				return fields[i-1]
			}
		}
		return ""
	}
	if code != 1 || count("succeeded") != "999" || count("failed") != "1" || count("rejected") != "0" ||
		!strings.Contains(stderr, "1 of 1000 jobs did not succeed") {
		t.Fatalf("exit %d, summary %q, stderr %q", code, out, stderr)
	}
	bad := filepath.Join(dir, "bad.json")
	must(t, os.WriteFile(bad, []byte(`[{"comand":["true"]}]`), 0o600), "write batch")
	if _, stderr, code := runCLI(t, serverEnv(n), "batch", "submit", "-p", "batch", bad); code != exitRejected || !strings.Contains(stderr, "comand") {
		t.Fatalf("bad file: exit %d, stderr %q", code, stderr)
	}
}
