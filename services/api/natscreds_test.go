package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/natskv"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
	"github.com/rdev-dev/rdev/services/api"
	"github.com/rdev-dev/rdev/services/api/internal/natsjs"
)

// calloutBundle is an API serving the auth callout of a real embedded NATS
// server that admits only rdev's role users and, through the callout,
// the NATS credentials the API mints.
type calloutBundle struct {
	bundle
	nurl   string              // the NATS server's client URL
	writer jetstream.JetStream // rdev's admin user, to write as a worker would
}

func setupCallout(t *testing.T, ttl time.Duration) calloutBundle {
	t.Helper()
	return setupCalloutWith(t, ttl, false, 0)
}

// setupCalloutWith is setupCallout whose API, with system set, signs in as
// the system user too (natsserver.RoleSystem) and so closes revoked
// credentials' connections, checking them all every sweepEvery (0: the
// default).
func setupCalloutWith(t *testing.T, ttl time.Duration, system bool, sweepEvery time.Duration) calloutBundle {
	t.Helper()
	creds, err := natsserver.EnsureCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), Users: creds.Users(), CalloutIssuer: creds.CalloutIssuer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return calloutOn(t, srv.ClientURL(), creds, api.Config{NATSCredentialTTL: ttl, NATSSweepEvery: sweepEvery}, system)
}

// calloutOn is an API serving the auth callout of the server at url with
// the issuer seed of creds and cfg, signed in as creds' api user (and,
// with system, as the system user too), the topology provisioned as its
// admin.
func calloutOn(t *testing.T, url string, creds natsserver.Credentials, cfg api.Config, system bool) calloutBundle {
	t.Helper()
	seed, err := os.ReadFile(creds.CalloutSeedFile())
	if err != nil {
		t.Fatal(err)
	}
	cfg.NATSCalloutSeed = bytes.TrimSpace(seed)
	return calloutWith(t, url, func(r natsserver.Role) nats.Option {
		o, err := nats.NkeyOptionFromSeed(creds.SeedFile(r))
		if err != nil {
			t.Fatal(err)
		}
		return o
	}, cfg, system)
}

// calloutWith is an API with cfg serving the auth callout of the server
// at url; rdev's users sign in with what signIn gives their role: the
// admin provisions the topology, the API runs as the api user and, with
// system, as the system user too (closing revoked credentials'
// connections).
func calloutWith(t *testing.T, url string, signIn func(natsserver.Role) nats.Option, cfg api.Config, system bool) calloutBundle {
	t.Helper()
	connect := func(r natsserver.Role) jetstream.JetStream {
		nc, err := nats.Connect(url, signIn(r))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	admin := connect(natsserver.RoleAdmin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topology.Ensure(ctx, admin, topology.Config{}); err != nil {
		t.Fatal(err)
	}
	var sys *nats.Conn
	if system {
		sys = connect(natsserver.RoleSystem).Conn()
	}
	cfg.MaxBodyBytes = 64 << 10
	b := setupWithDeps(t, cfg, connect(natsserver.RoleAPI), func(d *api.Deps) { d.NATSSystem = sys })
	b.js = admin
	return calloutBundle{bundle: b, nurl: url, writer: admin}
}

// credential asks the API for a NATS credential of project with key.
func (b calloutBundle) credential(t *testing.T, project, key string) contracts.NATSCredentials {
	t.Helper()
	resp, rb := b.post(t, "/v1/projects/"+project+"/nats-credentials", "", nil, bearer(key)...)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("nats-credentials: %d %s", resp.StatusCode, rb)
	}
	var c contracts.NATSCredentials
	if err := json.Unmarshal(rb, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// reader is a direct subscriber's connection, with the errors the server
// sent it (permission violations arrive asynchronously).
type reader struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func (b calloutBundle) connect(c contracts.NATSCredentials, opts ...nats.Option) (*reader, error) {
	r := &reader{errs: make(chan error, 64)}
	opts = append([]nats.Option{nats.Token(c.Token), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case r.errs <- err:
			default:
			}
		})}, opts...)
	nc, err := nats.Connect(b.nurl, opts...)
	if err != nil {
		return nil, err
	}
	r.nc = nc
	r.js, err = jetstream.New(nc)
	return r, err
}

func (b calloutBundle) mustConnect(t *testing.T, c contracts.NATSCredentials) *reader {
	t.Helper()
	r, err := b.connect(c)
	if err != nil {
		t.Fatalf("connect with a fresh credential: %v", err)
	}
	t.Cleanup(r.nc.Close)
	return r
}

// refused waits for the server's permission violation naming subject.
// The bound is generous: the error is the server's answer to one
// protocol line, but the CI machine is loaded.
func (r *reader) refused(t *testing.T, what, subject string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case err := <-r.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return
			}
		case <-timeout:
			t.Fatalf("%s: no permission violation for %q from the server", what, subject)
		}
	}
}

// line stores an output line of stream in project, as a worker would.
func (b calloutBundle) line(t *testing.T, project, stream string, seq uint64) {
	t.Helper()
	body, _ := json.Marshal(contracts.OutputLine{V: contracts.OutputLineVersion, StreamID: stream, JobID: "j-" + stream, Attempt: 1,
		Seq: seq, FD: contracts.Stdout, Text: project + " line", Time: time.Now().UTC()})
	if _, err := b.writer.Publish(t.Context(), contracts.SubjectOutput(project, stream), body); err != nil {
		t.Fatal(err)
	}
}

func (b calloutBundle) event(t *testing.T, project, stream string, typ contracts.EventType) {
	t.Helper()
	body, _ := json.Marshal(contracts.Event{V: contracts.Version, Type: typ, JobID: "j-" + stream, StreamID: stream, Project: project, Time: time.Now()})
	if _, err := b.writer.Publish(t.Context(), contracts.SubjectEvent(project, stream, typ), body); err != nil {
		t.Fatal(err)
	}
}

// A credential of demo follows demo's streams live with a plain
// subscription and sees nothing of the project "other"; replay is a
// streamer's service, not the JetStream API
// (TestNATSCredentialsCannotMakeTheServerWriteElsewhere says why a
// credential sends no JetStream request).
func TestNATSCredentialsFollowTheirProject(t *testing.T) {
	t.Parallel()
	b := setupCallout(t, 0)
	key := b.newKey(t, `{"name":"reader","scopes":["project:demo:read"]}`)
	c := b.credential(t, "demo", key.Key)
	if len(c.Subscribe) != 3 || len(c.Publish) != 1 || c.InboxPrefix == "" || time.Until(c.ExpiresAt) > api.DefaultNATSCredentialTTL {
		t.Fatalf("credential %+v", c)
	}
	if !audited(t, b.bundle, contracts.AuditNATSCredentialsIssued) {
		t.Fatal("no nats_credentials_issued audit record")
	}
	if _, rb := b.get(t, "/v1/projects/demo/audit?kind="+string(contracts.AuditNATSCredentialsIssued)); bytes.Contains(rb, []byte(c.Token)) {
		t.Fatal("the audit record holds the token")
	}
	b.event(t, "demo", "s1", contracts.EventStarted)
	b.line(t, "demo", "s1", 1)
	b.line(t, "other", "o1", 1)
	b.line(t, "demo", "s1", 2)

	r := b.mustConnect(t, c)
	live, err := r.nc.SubscribeSync(contracts.SubjectProjectOutput("demo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	b.line(t, "other", "o1", 2)
	b.line(t, "demo", "s1", 3)
	m, err := live.NextMsg(20 * time.Second)
	if err != nil || m.Subject != contracts.SubjectOutput("demo", "s1") {
		t.Fatalf("live line: %v %v", m, err)
	}
	b.event(t, "demo", "s1", contracts.EventSucceeded)
	events, err := r.nc.SubscribeSync(contracts.SubjectProjectEvents("demo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	b.event(t, "other", "o1", contracts.EventStarted)
	b.event(t, "demo", "s2", contracts.EventStarted)
	if m, err := events.NextMsg(20 * time.Second); err != nil || m.Subject != contracts.SubjectEvent("demo", "s2", contracts.EventStarted) {
		t.Fatalf("live event: %v %v", m, err)
	}
	if m, err := live.NextMsg(time.Second); err == nil {
		t.Fatalf("a line after the last: %s", m.Subject)
	}
}

// Every attempt outside the project's output and events is refused by
// the server itself.
func TestNATSCredentialsAreRefusedEverythingElse(t *testing.T) {
	t.Parallel()
	b := setupCallout(t, 0)
	c := b.credential(t, "demo", b.admin2(t))
	r := b.mustConnect(t, c)
	// Each refused call through the client library waits out its own
	// bound: the library reports some refusals only as a timeout.
	bounded := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	for _, subj := range []string{contracts.SubjectProjectOutput("other"), contracts.SubjectProjectEvents("other"), "rdev.output.>", "_INBOX.>", ">",
		contracts.ReaderInboxPrefix + ".>", contracts.SubjectReaderInbox("demo", "another-credential") + ".>", contracts.SubjectReplayPrefix + ".>"} {
		if _, err := r.nc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		r.refused(t, "subscribe "+subj, subj)
	}
	for _, subj := range []string{
		contracts.SubjectJob(contracts.PriorityNormal, "demo"),
		contracts.SubjectOutput("demo", "s1"),
		contracts.SubjectEvent("demo", "s1", contracts.EventSucceeded),
		contracts.SubjectCancel("j1"),
		contracts.SubjectReplay("other", "s1"),
		contracts.SubjectReplayPrefix + ".demo",
		contracts.SubjectReplay("demo", "s1") + ".x",
		"$KV." + contracts.BucketAccess + ".project.demo",
		"$JS.API.DIRECT.GET.KV_" + contracts.BucketAccess + ".$KV." + contracts.BucketAccess + ".meta.token_secret",
		"$JS.API.STREAM.INFO.KV_" + contracts.BucketAccess,
		"$JS.API.STREAM.MSG.GET." + contracts.StreamOutput,
		"$JS.API.CONSUMER.CREATE." + contracts.StreamOutput,
		"$JS.API.CONSUMER.CREATE." + contracts.StreamOutput + ".c1",
		"$JS.API.CONSUMER.CREATE." + contracts.StreamOutput + ".c1.rdev.output.>",
		"$JS.API.CONSUMER.CREATE." + contracts.StreamOutput + ".c1." + contracts.SubjectProjectStreams("other"),
		"$JS.API.CONSUMER.DURABLE.CREATE." + contracts.StreamOutput + ".c1",
		"$JS.API.CONSUMER.MSG.NEXT." + contracts.StreamOutput + "." + natsjs.ConsumerAuditFinished,
		"$JS.API.CONSUMER.MSG.NEXT." + contracts.StreamOutput + "." + contracts.ConsumerNotifierEvents,
		"$JS.API.CONSUMER.DELETE." + contracts.StreamOutput + "." + contracts.ConsumerNotifierEvents,
		"$JS.API.CONSUMER.CREATE." + contracts.StreamJobs + ".c1.rdev.jobs.>",
	} {
		if err := r.nc.Publish(subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		r.refused(t, "publish "+subj, subj)
	}
	// Through the client library: the access bucket, and ordered
	// consumers even of the project's own output (replay is the
	// streamer's service, rdev.replay.<project>.<stream>).
	if _, err := r.js.KeyValue(bounded(), contracts.BucketAccess); err == nil {
		t.Fatal("opened the access bucket")
	}
	for _, filter := range []string{contracts.SubjectProjectOutput("demo"), contracts.SubjectProjectOutput("other")} {
		if _, err := r.js.OrderedConsumer(bounded(), contracts.StreamOutput, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{filter},
		}); err == nil {
			t.Fatalf("created a consumer of %s", filter)
		}
	}
}

// admin2 is a read key of demo only (a fresh key per test).
func (b calloutBundle) admin2(t *testing.T) string {
	t.Helper()
	return b.newKey(t, `{"name":"reader","scopes":["project:demo:read"]}`).Key
}

// A credential is checked against the access store at every connect: a
// revoked key's, a deleted project's, an expired or a forged one is
// refused, and a key without read on the project gets none.
func TestNATSCredentialsOfRevokedKeyDeletedProjectOrExpiredAreRefused(t *testing.T) {
	t.Parallel()
	b := setupCallout(t, 0)
	key := b.newKey(t, `{"name":"reader","scopes":["project:demo:read"]}`)
	c := b.credential(t, "demo", key.Key)
	r := b.mustConnect(t, c)
	r.nc.Close()

	if resp, rb := b.do(t, http.MethodDelete, "/v1/keys/"+key.ID, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, rb)
	}
	refusedAtConnect(t, b, c, "a revoked key's credential")

	if resp, rb := b.post(t, "/v1/projects", "application/json", []byte(`{"id":"gone"}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create project: %d %s", resp.StatusCode, rb)
	}
	gone := b.credential(t, "gone", b.admin)
	if resp, rb := b.do(t, http.MethodDelete, "/v1/projects/gone", "", nil); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete project: %d %s", resp.StatusCode, rb)
	}
	refusedAtConnect(t, b, gone, "a deleted project's credential")
	// Created again: another incarnation, which the old credential is not for.
	if resp, rb := b.post(t, "/v1/projects", "application/json", []byte(`{"id":"gone"}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create project again: %d %s", resp.StatusCode, rb)
	}
	refusedAtConnect(t, b, gone, "a credential of the project's earlier incarnation")

	// Expired and forged, signed as the API would with the token secret.
	other := b.credential(t, "demo", b.admin)
	signer := b.signer(t)
	nonce := "forged-nonce"
	adminID := b.adminKeyID(t)
	expired := other
	expired.Token = signer.SignFor(access.NATSResource("demo", nonce), access.Grant{KeyID: adminID, Incarnation: b.incarnation(t, "demo")}, time.Now().Add(-time.Second))
	refusedAtConnect(t, b, expired, "an expired credential")
	forged := other
	forged.Token = access.NewSigner([]byte("not the secret")).SignFor(access.NATSResource("other", nonce), access.Grant{KeyID: adminID, Incarnation: b.incarnation(t, "other")}, time.Now().Add(time.Hour))
	refusedAtConnect(t, b, forged, "a forged credential")
	stream := other
	stream.Token = signer.SignFor(access.StreamResource("s1"), access.Grant{KeyID: adminID, Incarnation: b.incarnation(t, "demo")}, time.Now().Add(time.Hour))
	refusedAtConnect(t, b, stream, "a stream token")

	outsider := b.newKey(t, `{"name":"outsider","scopes":["project:other:read"]}`)
	if resp, rb := b.post(t, "/v1/projects/demo/nats-credentials", "", nil, bearer(outsider.Key)...); resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusForbidden {
		t.Fatalf("credential for a project the key may not read: %d %s", resp.StatusCode, rb)
	}
}

func refusedAtConnect(t *testing.T, b calloutBundle, c contracts.NATSCredentials, what string) {
	t.Helper()
	r, err := b.connect(c)
	if err == nil {
		r.nc.Close()
		t.Fatalf("%s was admitted", what)
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("%s: %v, want an authorization violation", what, err)
	}
}

// A connection ends when its credential expires: the server closes it
// when the user JWT the callout issued expires.
func TestNATSCredentialConnectionEndsAtExpiry(t *testing.T) {
	t.Parallel()
	setupCallout(t, 2*time.Second).connectionEndsAtExpiry(t)
}

// connectionEndsAtExpiry checks that a connection with a credential of
// b's API, whose TTL is short, is closed by the server once the
// credential expires, and not before.
func (b calloutBundle) connectionEndsAtExpiry(t *testing.T) {
	t.Helper()
	c := b.credential(t, "demo", b.admin2(t))
	closed := make(chan struct{})
	r, err := b.connect(c, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer r.nc.Close()
	// Generous: expiry is at most 2s away; the machine is loaded.
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("the connection outlived its credential")
	}
	if time.Now().Before(c.ExpiresAt) {
		t.Fatalf("closed at %v, before the credential's expiry %v", time.Now(), c.ExpiresAt)
	}
	refusedAtConnect(t, b, c, "an expired credential")
}

// Without an issuer key the endpoint says the feature is off.
func TestNATSCredentialsDisabledWithoutCalloutKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, rb := b.post(t, "/v1/projects/demo/nats-credentials", "", nil)
	if resp.StatusCode != http.StatusConflict || !bytes.Contains(rb, []byte("nats_credentials_disabled")) {
		t.Fatalf("%d %s", resp.StatusCode, rb)
	}
}

func (b calloutBundle) signer(t *testing.T) *access.Signer {
	t.Helper()
	store := b.store(t)
	secret, err := store.TokenSecret(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return access.NewSigner(secret)
}

func (b calloutBundle) store(t *testing.T) *natskv.Store {
	t.Helper()
	akv, err := b.writer.KeyValue(t.Context(), contracts.BucketAccess)
	if err != nil {
		t.Fatal(err)
	}
	store, err := natskv.Open(t.Context(), akv)
	if err != nil {
		t.Fatal(err)
	}
	return store
}

func (b calloutBundle) incarnation(t *testing.T, project string) string {
	t.Helper()
	p, err := b.store(t).Project(t.Context(), project)
	if err != nil {
		t.Fatal(err)
	}
	return p.Incarnation
}

func (b calloutBundle) adminKeyID(t *testing.T) string {
	t.Helper()
	resp, rb := b.get(t, "/v1/keys/self")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("keys/self: %d %s", resp.StatusCode, rb)
	}
	var k contracts.Key
	if err := json.Unmarshal(rb, &k); err != nil {
		t.Fatal(err)
	}
	return k.ID
}

// A credential cannot make the server write into rdev's subjects: NATS
// permissions check neither a request's reply subject nor a consumer's
// deliver subject, so a credential that could publish anything at all
// (a JetStream pull request, a push consumer) could have the server
// deliver its project's stored messages to a job subject or a KV key.
// Credentials therefore send no JetStream request; every such publish is
// refused and nothing lands in the jobs stream or the state bucket. What
// they may publish, replay requests of their project, reaches the
// streamer with the reply subject they chose, which the streamer checks.
func TestNATSCredentialsCannotMakeTheServerWriteElsewhere(t *testing.T) {
	t.Parallel()
	b := setupCallout(t, 0)
	b.line(t, "demo", "s1", 1)
	r := b.mustConnect(t, b.credential(t, "demo", b.admin2(t)))
	jobs := contracts.SubjectJob(contracts.PriorityNormal, "demo")
	kvKey := "$KV." + contracts.BucketState + "." + contracts.JobKey("victim")
	create := "$JS.API.CONSUMER.CREATE." + contracts.StreamOutput + ".c1." + contracts.SubjectProjectOutput("demo")
	push, _ := json.Marshal(map[string]any{"stream_name": contracts.StreamOutput, "config": map[string]any{
		"name": "c1", "filter_subject": contracts.SubjectProjectOutput("demo"), "deliver_subject": jobs, "ack_policy": "none"}})
	if err := r.nc.Publish(create, push); err != nil {
		t.Fatal(err)
	}
	r.refused(t, "create a push consumer delivering to a job subject", create)
	next := "$JS.API.CONSUMER.MSG.NEXT." + contracts.StreamOutput + ".c1"
	if err := r.nc.PublishRequest(next, kvKey, []byte(`{"batch":10}`)); err != nil {
		t.Fatal(err)
	}
	r.refused(t, "a pull request answered into the state bucket", next)
	// What a credential may publish, a replay request of its project, the
	// server passes on with whatever reply subject it names: so the
	// streamer answering it checks the reply subject itself and answers
	// nothing outside the project's reader inboxes (streamer's
	// TestNATSReplayIgnoresForeignReplySubjects, cmd/rdev's
	// TestUpReplaysOverNATS).
	requests, err := b.writer.Conn().SubscribeSync(contracts.SubjectReplayPrefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.writer.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if err := r.nc.PublishRequest(contracts.SubjectReplay("demo", "s1"), kvKey, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := requests.NextMsg(20 * time.Second); err != nil || m.Reply != kvKey {
		t.Fatalf("the replay request with a foreign reply subject: %v %v", m, err)
	}
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s, err := b.writer.Stream(t.Context(), contracts.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(jobs))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[jobs]; n != 0 {
		t.Fatalf("%d messages landed on %s", n, jobs)
	}
	kv, err := b.writer.KeyValue(t.Context(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(t.Context(), contracts.JobKey("victim")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the state bucket holds %s: %v", contracts.JobKey("victim"), err)
	}
}
