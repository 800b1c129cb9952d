package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/seal"
	"github.com/rdev-dev/rdev/pkg/telemetry"
)

// lockedBuffer is a log destination written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// A project secret reaches its job's environment and nothing else: not an
// API response, a log line, a NATS message, a dead letter, an audit record
// or the JetStream files. Plain env values are redacted in dead letters
// and audit records.
func TestSecretReachesOnlyTheJob(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	const value = "sk-ant-e2e-4a1f9c0b7d2e-do-not-leak"
	const plain = "plain-env-value-6d3e"
	sum := sha256.Sum256([]byte(value))

	dataDir := t.TempDir()
	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runWith(ctx, context.WithoutCancel(ctx), upArgs(dataDir), pw, logs, telemetry.Config{})
		pw.Close()
	}()
	n := readReady(t, pr, done)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("rdev up: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("rdev up did not stop within 30s")
		}
	}
	t.Cleanup(stop)

	// rdev up made a key of its own, readable by its user only.
	fi, err := os.Stat(filepath.Join(dataDir, "secrets.key"))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("secrets.key: %v %v", fi, err)
	}

	// Every NATS message, as an admin sees them.
	nc, err := n.connectNATS()
	must(t, err, "connect")
	defer nc.Close()
	var natsMu sync.Mutex
	var natsSeen [][]byte
	sub, err := nc.Subscribe(">", func(m *nats.Msg) {
		natsMu.Lock()
		natsSeen = append(natsSeen, append([]byte(m.Subject+" "), m.Data...))
		natsMu.Unlock()
	})
	must(t, err, "subscribe")
	must(t, nc.Flush(), "flush")

	var answers []string
	do := func(method, path string, body any) (int, []byte) {
		t.Helper()
		code, b := call(t, method, n.http+path, body)
		answers = append(answers, string(b))
		return code, b
	}
	if code, b := do(http.MethodPost, "/v1/projects", map[string]string{"id": "sec"}); code != http.StatusCreated {
		t.Fatalf("create project: %d %s", code, b)
	}
	if code, b := do(http.MethodPut, "/v1/projects/sec/secrets/anthropic", map[string]string{"value": value}); code != http.StatusCreated {
		t.Fatalf("put secret: %d %s", code, b)
	}

	// The job proves it has the value without printing it.
	check := `[ "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" = ` + hex.EncodeToString(sum[:]) + ` ] && echo ok`
	code, b := do(http.MethodPost, "/v1/projects/sec/commands", map[string]any{
		"command": []string{"sh", "-c", check}, "env": map[string]any{"TOKEN": map[string]string{"secret": "anthropic"}, "PLAIN": plain}})
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, b)
	}
	ok := mustJSON[contracts.SubmitResponse](t, string(b))
	if st := waitFinal(t, n.http, ok.JobID, 30*time.Second); st.Status != contracts.StatusSucceeded {
		t.Fatalf("job with the secret: %s %s", st.Status, st.Message)
	}
	js, err := jetstream.New(nc)
	must(t, err, "jetstream")
	if out := jobOutput(t, js, ok.StreamID); out != "ok\n" {
		t.Fatalf("job output %q, want ok", out)
	}

	// A job given up becomes a dead letter with its env redacted, its
	// secret by name; it cannot be retried with the redacted values.
	code, b = do(http.MethodPost, "/v1/projects/sec/commands", map[string]any{
		"command": []string{"sh", "-c", "exit 3"}, "max_attempts": 2, "retry_on_exit_codes": []int{3},
		"env": map[string]any{"TOKEN": map[string]string{"secret": "anthropic"}, "PLAIN": plain}})
	if code != http.StatusAccepted {
		t.Fatalf("submit failing job: %d %s", code, b)
	}
	dead := mustJSON[contracts.SubmitResponse](t, string(b))
	waitFinal(t, n.http, dead.JobID, 30*time.Second)
	var dl contracts.DeadLetter
	await.Within(t, 10*time.Second, "the job's dead letter", func() bool {
		_, b := do(http.MethodGet, "/v1/dead-letters?project=sec", nil)
		page := mustJSON[contracts.DeadLetterPage](t, b)
		for _, d := range page.DeadLetters {
			if d.ID == dead.JobID {
				dl = d
			}
		}
		return dl.Job != nil
	})
	if dl.Job.Env["PLAIN"] != contracts.Redacted || dl.Job.SecretEnv["TOKEN"] != "anthropic" {
		t.Fatalf("dead letter env %v secret_env %v", dl.Job.Env, dl.Job.SecretEnv)
	}
	if code, b := do(http.MethodPost, "/v1/dead-letters/"+dl.ID+"/retry", nil); code != http.StatusConflict || !strings.Contains(string(b), "dead_letter_env_redacted") {
		t.Fatalf("retry of a redacted dead letter: %d %s", code, b)
	}
	do(http.MethodGet, "/v1/audit?project=sec", nil)
	do(http.MethodGet, "/v1/projects/sec/secrets", nil)
	do(http.MethodGet, "/v1/jobs/"+ok.JobID, nil)

	for _, a := range answers {
		if strings.Contains(a, value) || strings.Contains(a, plain) {
			t.Fatalf("an API response holds a value: %s", a)
		}
	}
	must(t, sub.Unsubscribe(), "unsubscribe")
	natsMu.Lock()
	for _, m := range natsSeen {
		if bytes.Contains(m, []byte(value)) {
			t.Errorf("a NATS message holds the secret: %.200s", m)
		}
	}
	natsMu.Unlock()
	nc.Close()

	stop() // every JetStream block written
	if strings.Contains(logs.String(), value) {
		t.Error("rdev logged the secret")
	}
	files, argvFound := 0, false
	must(t, filepath.WalkDir(filepath.Join(dataDir, "jetstream"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		argvFound = argvFound || bytes.Contains(raw, []byte(hex.EncodeToString(sum[:])))
		if bytes.Contains(raw, []byte(value)) {
			t.Errorf("%s holds the secret", path)
		}
		return nil
	}), "walk")
	if files == 0 || !argvFound {
		// The job's argv is in its audit record: the search must see it.
		t.Fatalf("searched %d JetStream files and found not even the job's argv: the search reads nothing", files)
	}
}

// The secrets key comes from a file, or from --secrets-key in base64 (an
// environment variable in compose); the file wins; a malformed key is
// refused without being echoed; with neither, secrets are off.
func TestSecretsKeySources(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	raw := bytes.Repeat([]byte{7}, seal.KeySize)
	inline := base64.StdEncoding.EncodeToString(raw)
	got, err := secretsFlags{SecretsKey: inline + "\n"}.key(false, log)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("inline key: %x, %v", got, err)
	}
	file := filepath.Join(t.TempDir(), "secrets.key")
	fromFile := bytes.Repeat([]byte{9}, seal.KeySize)
	must(t, os.WriteFile(file, fromFile, 0o600), "write key file")
	if got, err := (secretsFlags{SecretsKeyFile: file, SecretsKey: inline}).key(false, log); err != nil || !bytes.Equal(got, fromFile) {
		t.Fatalf("file and inline: %x, %v; want the file's", got, err)
	}
	short := base64.StdEncoding.EncodeToString(raw[:16])
	for _, bad := range []string{short, "not base64!"} {
		_, err := secretsFlags{SecretsKey: bad}.key(false, log)
		if err == nil || strings.Contains(err.Error(), bad) {
			t.Errorf("key %q: %v; want a refusal that does not echo it", bad, err)
		}
	}
	if got, err := (secretsFlags{}).key(false, log); got != nil || err != nil {
		t.Errorf("no key: %x, %v; want none (secrets off)", got, err)
	}
	if f := upSecrets(secretsFlags{SecretsKey: inline}, "/data"); f.SecretsKeyFile != "" {
		t.Errorf("rdev up with an inline key also names the file %q", f.SecretsKeyFile)
	}
}
