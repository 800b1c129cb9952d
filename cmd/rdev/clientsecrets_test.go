package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The secrets commands against `rdev up`: set reads the value from
// standard input (one trailing newline dropped, unless --raw), a job sees
// exactly that value, ls shows names and never a value, bad input is
// refused with a clear error and sends nothing, delete removes it; and
// no command prints a value.
func TestSecretsCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	createProject(t, n, "secc")
	env := append(serverEnv(n), "RDEV_PROJECT=secc")
	const value = "s3cret-Value with spaces"
	var printed strings.Builder
	withInput := func(in string, args ...string) (string, string, int) {
		t.Helper()
		p := startCLIWithInput(t, env, strings.NewReader(in), args...)
		out, code := p.wait(t, time.Minute)
		printed.WriteString(out + p.errText)
		return out, p.errText, code
	}
	ok := func(in string, args ...string) string {
		t.Helper()
		out, stderr, code := withInput(in, args...)
		if code != 0 {
			t.Fatalf("rdev %v: exit %d, %s", args, code, stderr)
		}
		return out
	}
	jobSees := func(want string) bool { t.Helper(); return jobSeesSecret(t, n, "secc", "token", want) }

	if out := ok("first\n", "secrets", "set", "-o", "json", "token"); !mustJSON[secretSet](t, out).Created {
		t.Fatalf("set a new secret printed %q", out)
	}
	if out := ok(value+"\n", "secrets", "set", "token"); out != "secret token replaced\n" {
		t.Fatalf("replace printed %q", out)
	}
	if !jobSees(value) {
		t.Fatal("the job did not see the value without its trailing newline")
	}
	ok("two lines\n", "secrets", "set", "--raw", "token")
	if !jobSees("two lines\n") {
		t.Fatal("--raw did not keep the trailing newline")
	}
	if out := ok("", "secrets", "ls"); !strings.Contains(out, "token") {
		t.Fatalf("ls:\n%s", out)
	}

	for _, c := range []struct {
		in, want string
		args     []string
	}{
		{"", "no value on standard input", []string{"secrets", "set", "token"}},
		{"\n", "no value on standard input", []string{"secrets", "set", "token"}},
		{strings.Repeat("x", contracts.MaxSecretBytes+1), "over 32 KiB", []string{"secrets", "set", "token"}},
		{value, "invalid_secret_name", []string{"secrets", "set", "bad name!"}},
		{"", "secret_not_found", []string{"secrets", "delete", "nosuch"}},
	} {
		if _, stderr, code := withInput(c.in, c.args...); code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("rdev %v with %d bytes in: exit %d, %q; want 1 and %q", c.args, len(c.in), code, stderr, c.want)
		}
	}
	if !jobSees("two lines\n") {
		t.Fatal("a refused set changed the secret")
	}
	// On a terminal: a prompt, and what is typed is not echoed.
	cmd := exec.Command(os.Args[0], "secrets", "set", "token")
	cmd.Env = append(append(os.Environ(), childEnv+"=1", "RDEV_CONFIG="+filepath.Join(t.TempDir(), "config.yaml")), env...)
	tty, err := pty.Start(cmd)
	must(t, err, "start rdev on a terminal")
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = tty.Close() })
	screen := make(chan string, 1)
	go func() { var b bytes.Buffer; _, _ = io.Copy(&b, tty); screen <- b.String() }()
	// Type once the terminal stops echoing (the master shares the
	// terminal's settings): typed before, the terminal itself would echo.
	await.Within(t, 30*time.Second, "the prompt's terminal without echo", func() bool {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		return err == nil && tio.Lflag&unix.ECHO == 0
	})
	_, err = tty.Write([]byte("typed-on-a-terminal\r"))
	must(t, err, "type the value")
	must(t, cmd.Wait(), "rdev secrets set on a terminal")
	shown := <-screen
	if !strings.Contains(shown, "(not echoed)") || strings.Contains(shown, "typed-on-a-terminal") || !strings.Contains(shown, "secret token replaced") {
		t.Errorf("the terminal showed %q; want the prompt and the outcome, not the value", shown)
	}
	if !jobSees("typed-on-a-terminal") {
		t.Fatal("the job did not see the typed value")
	}

	ok("", "secrets", "delete", "token")
	if out := ok("", "secrets", "ls", "-o", "json"); strings.Contains(out, "token") {
		t.Fatalf("ls after delete:\n%s", out)
	}
	if strings.Contains(printed.String(), value) || strings.Contains(printed.String(), "two lines") {
		t.Errorf("a command printed a secret's value:\n%s", printed.String())
	}
}

// jobSeesSecret runs a job of project whose env TOKEN is the secret, and
// reports whether it saw want exactly (the job compares; the value is
// never printed).
func jobSeesSecret(t *testing.T, n *node, project, secret, want string) bool {
	t.Helper()
	r := submit(t, n.http, project, map[string]any{"command": []string{"sh", "-c", `test "$TOKEN" = "$WANT"`},
		"env": map[string]any{"TOKEN": map[string]string{"secret": secret}, "WANT": want}})
	return waitFinal(t, n.http, r.JobID, 30*time.Second).Status == contracts.StatusSucceeded
}
