package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// A job submitted with a submit-only key cannot reach NATS: not without
// credentials, not with guessed ones, not with the ones in the data
// directory (it runs as the job user and cannot read them). The access
// bucket is unchanged.
func TestJobCannotReachNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	if os.Geteuid() != 0 {
		t.Skip("the job user needs rdev to run as root")
	}
	t.Parallel()
	dataDir := t.TempDir()
	// t.TempDir is private to root; a data directory's parent is not.
	must(t, os.Chmod(filepath.Dir(dataDir), 0o711), "chmod")
	n := startInProcess(t, "--data-dir", dataDir, "--job-user", "nobody")

	const project = "victim"
	if code, b := call(t, http.MethodPost, n.http+"/v1/projects", map[string]string{"id": project}); code != http.StatusCreated {
		t.Fatalf("create project: %d %s", code, b)
	}
	code, b := call(t, http.MethodPost, n.http+"/v1/keys", map[string]any{"name": "submitter", "scopes": []string{"project:" + project + ":submit"}})
	if code != http.StatusCreated {
		t.Fatalf("create key: %d %s", code, b)
	}
	key := mustJSON[contracts.Key](t, b).Key

	nc, err := n.connectNATS()
	must(t, err, "connect as admin")
	defer nc.Close()
	js, err := jetstream.New(nc)
	must(t, err, "jetstream")
	// Which records the access bucket holds (the API itself may update
	// one, e.g. a key's last use; none may appear).
	accessKeys := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, contracts.BucketAccess)
		must(t, err, "access bucket")
		l, err := kv.ListKeys(ctx)
		must(t, err, "list access keys")
		var keys []string
		for k := range l.Keys() {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return strings.Join(keys, " ")
	}
	before := accessKeys()

	u, err := url.Parse(n.nats)
	must(t, err, "nats url")
	// Each attempt speaks the NATS protocol over bash's /dev/tcp and prints
	// the server's answer; the seeds are read from the data directory. The
	// server resets a refused connection once it has answered, and cat's
	// "Connection reset by peer" would land between the answer's lines
	// (stderr is not piped through tr and grep): it is dropped.
	probe := func(connect string) string {
		return `exec 3<>/dev/tcp/` + u.Hostname() + `/` + u.Port() + `; printf '%s\r\nPUB $KV.rdev_access.key.evil 2\r\nhi\r\nPING\r\n' '` + connect + `' >&3 2>/dev/null; timeout 2 cat <&3 2>/dev/null | tr -d '\r' | grep -v '^INFO'; exec 3>&-`
	}
	script := strings.Join([]string{
		// The server closes a refused connection at once: a write after
		// that must fail with EPIPE (its message dropped), not kill the
		// probe with SIGPIPE.
		"trap '' PIPE",
		"id -u",
		"echo anonymous:", probe(`CONNECT {"verbose":false}`),
		"echo guessed:", probe(`CONNECT {"verbose":false,"user":"admin","pass":"admin"}`),
		"echo token:", probe(`CONNECT {"verbose":false,"auth_token":"rdev"}`),
		"echo seeds:", "cat " + filepath.Join(dataDir, "nats", "admin.nk") + " " + filepath.Join(dataDir, "nats", "worker.nk") + " 2>&1",
		"echo store:", "ls " + filepath.Join(dataDir, "jetstream") + " 2>&1",
		"true",
	}, "\n")
	body, _ := json.Marshal(map[string]any{"command": []string{"bash", "-c", script}})
	req, _ := http.NewRequest(http.MethodPost, n.http+"/v1/projects/"+project+"/commands", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	must(t, err, "submit")
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit with the submit-only key: %d %s", resp.StatusCode, rb)
	}
	sub := mustJSON[contracts.SubmitResponse](t, string(rb))
	if st := waitFinal(t, n.http, sub.JobID, 30*time.Second); st.Status != contracts.StatusSucceeded {
		t.Fatalf("probe job %s: %+v", st.Status, st)
	}
	out := jobOutput(t, js, sub.StreamID)
	t.Logf("probe job printed:\n%s", out)
	for _, want := range []string{"65534", "anonymous:\n-ERR 'Authorization Violation'", "guessed:\n-ERR 'Authorization Violation'",
		"token:\n-ERR 'Authorization Violation'", "admin.nk: Permission denied", "worker.nk: Permission denied", "jetstream': Permission denied"} {
		if !strings.Contains(out, want) {
			t.Errorf("the probe's output lacks %q", want)
		}
	}
	for _, leaked := range []string{"PONG", "+OK", "SU"} {
		if strings.Contains(out, leaked) {
			t.Errorf("the probe's output holds %q: it reached NATS or read a seed", leaked)
		}
	}
	if after := accessKeys(); after != before {
		t.Errorf("access bucket records changed: %s, then %s", before, after)
	}
}

// jobOutput is a stream's output lines, read as admin from NATS.
func jobOutput(t *testing.T, js jetstream.JetStream, streamID string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contracts.SubjectStreamOutput(streamID)}})
	must(t, err, "consumer")
	var out strings.Builder
	for {
		batch, err := cons.FetchNoWait(100)
		must(t, err, "fetch")
		got := 0
		for m := range batch.Messages() {
			got++
			var l contracts.OutputLine
			must(t, json.Unmarshal(m.Data(), &l), "decode line")
			out.WriteString(l.Text + "\n")
		}
		if got == 0 {
			return out.String()
		}
	}
}
