package main

import (
	"os"
	"strings"
	"testing"
)

// The completion scripts hook rdev into each shell, and rdev answers a
// shell's COMP_LINE with the commands and flags of its command line.
func TestCompletion(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	for shell, want := range map[string]string{"bash": "complete -C", "zsh": "bashcompinit", "fish": "complete -f -c rdev"} {
		if out, stderr, code := runCLI(t, nil, "completion", shell); code != 0 || !strings.Contains(out, want) || !strings.Contains(out, os.Args[0]) {
			t.Errorf("completion %s: exit %d, %q %s", shell, code, out, stderr)
		}
	}
	for line, want := range map[string]string{"rdev ru": "run\n", "rdev run --pri": "--priority\n", "rdev jobs c": "cancel\n"} {
		if out, _, code := runCLI(t, []string{"COMP_LINE=" + line}); code != 0 || out != want {
			t.Errorf("COMP_LINE=%q: exit %d, %q; want %q", line, code, out, want)
		}
	}
}
