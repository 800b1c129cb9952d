package streamer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// revokedWithin bounds how long an open stream outlives its reader's access.
const revokedWithin = 5 * time.Second

// accessFixture adds projects and keys to the streamer's access bucket the
// way the admin endpoints do (through the same store).
type accessFixture struct {
	*fixture
	t *testing.T
}

func (a accessFixture) project(id, incarnation string) {
	a.t.Helper()
	if err := a.access.CreateProject(a.t.Context(), access.Project{ID: id, Incarnation: incarnation}); err != nil {
		a.t.Fatal(err)
	}
}

// key creates a key and returns its secret.
func (a accessFixture) key(id string, scopes ...string) string {
	a.t.Helper()
	secret := access.NewSecret(id)
	if err := a.access.CreateKey(a.t.Context(), access.Key{ID: id, Hash: access.HashSecret(secret), Scopes: scopes}); err != nil {
		a.t.Fatal(err)
	}
	return secret
}

func (a accessFixture) revoke(id string) {
	a.t.Helper()
	if _, err := a.access.UpdateKey(a.t.Context(), id, func(k *access.Key) error {
		now := time.Now().UTC()
		k.RevokedAt = &now
		return nil
	}); err != nil {
		a.t.Fatal(err)
	}
}

// job writes a stream reference made in a project's incarnation.
func (a accessFixture) job(project, incarnation string) *job {
	a.t.Helper()
	j := &job{f: a.fixture, streamID: uniqueID(a.t, "s"), jobID: uniqueID(a.t, "j"), project: project}
	ref, _ := json.Marshal(contracts.StreamRef{V: contracts.Version, StreamID: j.streamID, JobID: j.jobID, Project: project, ProjectIncarnation: incarnation})
	if _, err := a.kv.Put(context.Background(), contracts.StreamKey(j.streamID), ref); err != nil {
		a.t.Fatal(err)
	}
	return j
}

// token returns a stream token bound to a key and an incarnation, as the
// API hands out.
func (a accessFixture) token(j *job, keyID, incarnation string) string {
	return a.signer.SignFor(access.StreamResource(j.streamID), access.Grant{KeyID: keyID, Incarnation: incarnation}, time.Now().Add(time.Hour))
}

// open connects to j's stream and reads up to its first line, so the
// stream is live.
func (a accessFixture) open(j *job, o dialOpts) *sseClient {
	a.t.Helper()
	j.line(a.t, 1)
	c := a.connect(a.t, j.streamID, o)
	c.handshake(a.t)
	if ev, ok := c.next(a.t); !ok || ev.Name != contracts.SSEOutput {
		a.t.Fatalf("want the first line, got %+v (open %v)", ev, ok)
	}
	return c
}

// endsRevoked checks that c's stream ends with an access_revoked error
// event within revokedWithin of since.
func endsRevoked(t *testing.T, c *sseClient, since time.Time) {
	t.Helper()
	evs := c.rest(t)
	if took := time.Since(since); took > revokedWithin {
		t.Errorf("stream ended %s after access ended, want within %s", took, revokedWithin)
	}
	if len(evs) == 0 || evs[len(evs)-1].Name != contracts.SSEError {
		t.Fatalf("want an error event last, got %v", describe(t, evs))
	}
	var d contracts.ErrorDetail
	if err := json.Unmarshal([]byte(evs[len(evs)-1].Data), &d); err != nil || d.Code != access.CodeAccessRevoked || d.Message == "" {
		t.Fatalf("error event %s (%v), want code %s", evs[len(evs)-1].Data, err, access.CodeAccessRevoked)
	}
}

// staysOpen checks that c's stream still delivers j's lines.
func staysOpen(t *testing.T, c *sseClient, j *job, seq uint64) {
	t.Helper()
	j.line(t, seq)
	if ev, ok := c.next(t); !ok || ev.Name != contracts.SSEOutput || lineSeq(t, ev) != seq {
		t.Fatalf("want line %d on the unrelated stream, got %+v (open %v)", seq, ev, ok)
	}
}

// Revoking a key ends, within seconds, the open streams it reads with an
// API key or through a token it asked for; the streams of other keys
// stay open.
func TestRevokedKeyEndsOpenStreams(t *testing.T) {
	t.Parallel()
	a := accessFixture{setup(t, options{}), t}
	a.project("rv", "I1")
	a.key("GONE", "project:rv:read")
	goneSecret := a.key("GONE2", "project:rv:read")
	a.key("KEPT", "project:rv:read")
	j, k := a.job("rv", "I1"), a.job("rv", "I1")

	byToken := a.open(j, dialOpts{token: a.token(j, "GONE", "I1")})
	byKey := a.open(j, dialOpts{apiKey: goneSecret})
	kept := a.open(k, dialOpts{token: a.token(k, "KEPT", "I1")})

	now := time.Now()
	a.revoke("GONE")
	endsRevoked(t, byToken, now)
	now = time.Now()
	a.revoke("GONE2")
	endsRevoked(t, byKey, now)
	staysOpen(t, kept, k, 2)
}

// Deleting a project ends the open streams of tokens issued for it;
// creating it again (another incarnation) ends every reader's, a key's
// of the new project too; streams of other projects stay open.
func TestDeletedProjectEndsOpenStreams(t *testing.T) {
	t.Parallel()
	a := accessFixture{setup(t, options{}), t}
	a.project("del", "I1")
	a.project("stay", "S1")
	a.key("DK", "project:del:read")
	admin := a.key("ADM", "admin")
	a.key("SK", "project:stay:read")
	j, k := a.job("del", "I1"), a.job("stay", "S1")

	byToken := a.open(j, dialOpts{token: a.token(j, "DK", "I1")})
	byAdmin := a.open(j, dialOpts{apiKey: admin})
	kept := a.open(k, dialOpts{token: a.token(k, "SK", "S1")})

	now := time.Now()
	if err := a.access.DeleteProject(t.Context(), "del"); err != nil {
		t.Fatal(err)
	}
	endsRevoked(t, byToken, now)
	now = time.Now()
	a.project("del", "I2")
	endsRevoked(t, byAdmin, now)
	staysOpen(t, kept, k, 2)
}

// A project deleted and created again is another incarnation: a key of
// the new one cannot open the old one's streams, with the same answer as
// for a stream that does not exist; the new one's streams it can.
func TestKeyReadsOnlyItsProjectsIncarnation(t *testing.T) {
	t.Parallel()
	a := accessFixture{setup(t, options{}), t}
	a.project("again", "OLD")
	old := a.job("again", "OLD")
	old.line(t, 1)
	if err := a.access.DeleteProject(t.Context(), "again"); err != nil {
		t.Fatal(err)
	}
	a.project("again", "NEW")
	reader := a.key("NEWREADER", "project:again:read")
	admin := a.key("NEWADMIN", "admin")
	for name, key := range map[string]string{"reader": reader, "admin": admin} {
		t.Run(name, func(t *testing.T) {
			resp := a.get(t, old.streamID, dialOpts{apiKey: key})
			if resp.StatusCode == http.StatusOK {
				t.Fatal("the old incarnation's stream opened") // its body would never end
			}
			checkError(t, resp, http.StatusNotFound, "stream_not_found")
		})
	}
	fresh := a.job("again", "NEW")
	a.open(fresh, dialOpts{apiKey: reader})
}

// A batch's event stream ends like a job's when the key it was opened
// with is revoked.
func TestRevokedKeyEndsBatchStream(t *testing.T) {
	t.Parallel()
	a := accessFixture{setup(t, options{}), t}
	a.project("bt", "I1")
	secret := a.key("BK", "project:bt:read")
	j := a.job("bt", "I1")
	b := contracts.Batch{V: contracts.Version, ID: uniqueID(t, "b"), Project: "bt", ProjectIncarnation: "I1",
		JobIDs: []string{j.jobID}, State: contracts.BatchCommitted, SubmittedAt: time.Now().UTC()}
	body, _ := json.Marshal(b)
	if _, err := a.kv.Put(t.Context(), contracts.BatchKey(b.ID), body); err != nil {
		t.Fatal(err)
	}
	j.event(t, contracts.EventQueued, 0)
	c := a.connect(t, "", dialOpts{batchID: b.ID, apiKey: secret})
	c.until(t, func(ev sseEvent) bool { return ev.Name == contracts.SSEStatus })
	now := time.Now()
	a.revoke("BK")
	endsRevoked(t, c, now)
}

// The streamer keeps the keys and projects that streams opened with, and a
// revocation the watch brings drops them: once the key's open stream has
// ended, a new one with the key is refused, as before any was kept.
func TestRevokedKeyOpensNoNewStream(t *testing.T) {
	t.Parallel()
	a := accessFixture{setup(t, options{}), t}
	a.project("nr", "I1")
	secret := a.key("NR", "project:nr:read")
	first, second := a.job("nr", "I1"), a.job("nr", "I1")
	held := a.open(first, dialOpts{apiKey: secret})
	a.open(second, dialOpts{apiKey: secret}) // opened with the kept key and project

	now := time.Now()
	a.revoke("NR")
	endsRevoked(t, held, now)
	checkError(t, a.get(t, second.streamID, dialOpts{apiKey: secret}), http.StatusUnauthorized, "revoked_api_key")
}
