package natsserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
)

var update = flag.Bool("update", false, "rewrite deploy/nats/rdev-permissions.conf from Permissions")

const deployDir = "../../../deploy/nats"

// The shipped permissions file is the Go definition, rendered.
func TestPermissionsConf(t *testing.T) {
	path := filepath.Join(deployDir, "rdev-permissions.conf")
	want := natsserver.PermissionsConf()
	if *update {
		must(t, os.WriteFile(path, []byte(want), 0o644))
	}
	got, err := os.ReadFile(path)
	must(t, err)
	if string(got) != want {
		t.Fatalf("%s differs from natsserver.Permissions; run go test -run TestPermissionsConf -update", path)
	}
}

// The example cluster configuration, read by nats-server's own parser,
// gives every rdev user exactly the Go permissions.
func TestServerConf(t *testing.T) {
	keys := map[string]natsserver.Role{}
	for _, r := range append(natsserver.Roles(), natsserver.RoleSystem) {
		kp, err := nkeys.CreateUser()
		must(t, err)
		pub, err := kp.PublicKey()
		must(t, err)
		t.Setenv("RDEV_"+strings.ToUpper(string(r))+"_NKEY", pub)
		keys[pub] = r
	}
	t.Setenv("NATS_SERVER_NAME", "n1")
	issuer, err := nkeys.CreateAccount()
	must(t, err)
	issuerPub, err := issuer.PublicKey()
	must(t, err)
	t.Setenv("RDEV_NATS_CALLOUT_ISSUER", issuerPub)
	opts, err := server.ProcessConfigFile(filepath.Join(deployDir, "server.conf"))
	must(t, err)
	// Direct subscribers go through the auth callout; rdev's users bypass it.
	if ac := opts.AuthCallout; ac == nil || ac.Issuer != issuerPub || len(ac.AuthUsers) != len(keys) {
		t.Fatalf("server.conf auth_callout %+v: want issuer %s and every rdev user", ac, issuerPub)
	} else {
		for _, u := range ac.AuthUsers {
			if _, ok := keys[u]; !ok {
				t.Fatalf("auth_users has %s, none of rdev's users", u)
			}
		}
	}
	if len(opts.Nkeys) != len(keys) {
		t.Fatalf("server.conf has %d nkey users, want %d", len(opts.Nkeys), len(keys))
	}
	for _, u := range opts.Nkeys {
		r, ok := keys[u.Nkey]
		if !ok {
			t.Fatalf("server.conf user %s is none of rdev's", u.Nkey)
		}
		if got, want := canonical(u.Permissions), canonical(natsserver.Permissions(r)); got != want {
			t.Errorf("%s permissions in server.conf:\n%s\nwant:\n%s", r, got, want)
		}
		// The system user alone is in the system account.
		if inSys := u.Account != nil && u.Account.Name == natsserver.SystemAccount; inSys != (r == natsserver.RoleSystem) {
			t.Errorf("%s user in account %v", r, u.Account)
		}
	}
	if opts.SystemAccount != natsserver.SystemAccount {
		t.Errorf("server.conf system account %q, want %q", opts.SystemAccount, natsserver.SystemAccount)
	}
}

func canonical(p *server.Permissions) string {
	var b strings.Builder
	for _, l := range []struct {
		name string
		sp   *server.SubjectPermission
	}{{"pub", p.Publish}, {"sub", p.Subscribe}} {
		if l.sp != nil {
			b.WriteString(l.name + " allow " + strings.Join(slices.Sorted(slices.Values(l.sp.Allow)), " ") + "\n")
			b.WriteString(l.name + " deny " + strings.Join(slices.Sorted(slices.Values(l.sp.Deny)), " ") + "\n")
		}
	}
	if p.Response != nil {
		b.WriteString("responses " + p.Response.Expires.String() + " " + string(rune('0'+p.Response.MaxMsgs)) + "\n")
	}
	return b.String()
}

func TestCredentialsArePrivate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "nats")
	c, err := natsserver.EnsureCredentials(dir)
	must(t, err)
	again, err := natsserver.EnsureCredentials(dir)
	must(t, err)
	for _, r := range natsserver.Roles() {
		if c.Public[r] == "" || c.Public[r] != again.Public[r] {
			t.Errorf("%s: key %q, then %q: want one stable key", r, c.Public[r], again.Public[r])
		}
		fi, err := os.Stat(c.SeedFile(r))
		must(t, err)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s seed mode %v, want 0600", r, fi.Mode().Perm())
		}
	}
	fi, err := os.Stat(dir)
	must(t, err)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("credentials directory mode %v, want 0700", fi.Mode().Perm())
	}
}

type fixture struct {
	srv   *server.Server
	creds natsserver.Credentials
}

func setup(t *testing.T) fixture {
	t.Helper()
	creds, err := natsserver.EnsureCredentials(filepath.Join(t.TempDir(), "nats"))
	must(t, err)
	srv, err := natsserver.Start(natsserver.Config{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Users: creds.Users()})
	must(t, err)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	f := fixture{srv: srv, creds: creds}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, js, _ := f.connect(t, natsserver.RoleAdmin)
	_, err = topology.Ensure(ctx, js, topology.Config{Memory: true})
	must(t, err)
	return f
}

// connect signs in as role; violations collects the server's permission
// errors on the connection.
func (f fixture) connect(t *testing.T, r natsserver.Role) (*nats.Conn, jetstream.JetStream, <-chan error) {
	t.Helper()
	violations := make(chan error, 16)
	opt, err := nats.NkeyOptionFromSeed(f.creds.SeedFile(r))
	must(t, err)
	nc, err := nats.Connect(f.srv.ClientURL(), opt, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case violations <- err:
		default:
		}
	}))
	must(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	must(t, err)
	return nc, js, violations
}

func TestAnonymousAndUnknownRefused(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if nc, err := nats.Connect(f.srv.ClientURL()); err == nil {
		nc.Close()
		t.Error("anonymous connection admitted")
	}
	if nc, err := nats.Connect(f.srv.ClientURL(), nats.UserInfo("admin", "admin")); err == nil {
		nc.Close()
		t.Error("guessed user and password admitted")
	}
	guessed := filepath.Join(t.TempDir(), "guess.nk")
	kp, err := nkeys.CreateUser()
	must(t, err)
	seed, err := kp.Seed()
	must(t, err)
	must(t, os.WriteFile(guessed, seed, 0o600))
	opt, err := nats.NkeyOptionFromSeed(guessed)
	must(t, err)
	if nc, err := nats.Connect(f.srv.ClientURL(), opt); err == nil {
		nc.Close()
		t.Error("unknown nkey admitted")
	}
}

// Each service may do its job and is refused outside it.
func TestPermissions(t *testing.T) {
	t.Parallel()
	f := setup(t)
	actions := actions()
	allowed := map[natsserver.Role][]string{
		natsserver.RoleAPI: {"put access", "get project", "get key", "get token secret", "watch projects", "watch access",
			"put state", "get state", "publish job", "publish event", "publish audit", "read output", "last output line", "list jobs",
			"put queue pause", "get queue pause", "watch queue pauses", "put webhook", "get webhook", "watch webhooks", "put delivery", "get delivery",
			"publish webhook audit"},
		// The worker reads project records (limits), never keys or the
		// token secret: a stolen worker credential cannot forge tokens.
		natsserver.RoleWorker: {"get project", "watch projects", "put state", "get state", "fetch jobs",
			"publish output", "publish event", "publish dead letter", "last output line", "list jobs", "watch queue pauses"},
		natsserver.RoleStreamer: {"get project", "get key", "get token secret", "watch projects", "watch access", "get state", "read output", "last output line"},
		// The notifier keeps deliveries and leases and endpoint health,
		// reads stream references and batches, and audits only disables.
		natsserver.RoleNotifier: {"get state", "read output", "put webhook", "get webhook", "watch webhooks",
			"put delivery", "get delivery", "put lease", "publish webhook audit"},
	}
	for _, r := range []natsserver.Role{natsserver.RoleAPI, natsserver.RoleWorker, natsserver.RoleStreamer, natsserver.RoleNotifier} {
		for _, a := range actions {
			want := slices.Contains(allowed[r], a.name)
			t.Run(string(r)+"/"+a.name, func(t *testing.T) {
				t.Parallel()
				_, js, violations := f.connect(t, r)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				err := a.do(ctx, js)
				switch {
				case want && err != nil:
					t.Fatalf("refused: %v", err)
				case !want && err == nil:
					t.Fatal("allowed")
				case !want:
					select {
					case v := <-violations:
						if !errors.Is(v, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(v.Error()), "permissions violation") {
							t.Fatalf("failed with %v and %v, want a permissions violation", err, v)
						}
					case <-time.After(2 * time.Second):
						t.Fatalf("failed with %v, not a permissions violation", err)
					}
				}
			})
		}
	}
}

// The streamer may not answer the output lines delivered to it. With a
// reply permission (allow_responses) it could, once each, and for that the
// server recorded every line it delivered to the streamer and scanned the
// record every 4,096 deliveries: a command printing a million lines
// reached its one SSE client at half the rate (rdevbench throughput, 53k
// against 110k lines/s). The streamer answers replay requests on a
// publish permission for readers' inboxes instead.
func TestStreamerMayNotAnswerItsDeliveries(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, admin, _ := f.connect(t, natsserver.RoleAdmin)
	if _, err := admin.Publish(ctx, contracts.SubjectOutput("p1", "s1"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	nc, js, violations := f.connect(t, natsserver.RoleStreamer)
	cons, err := js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contracts.SubjectOutput("p1", "s1")}})
	must(t, err)
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	must(t, err)
	if msg.Reply() == "" {
		t.Fatal("the delivery has no reply subject to try")
	}
	must(t, nc.Publish(msg.Reply(), []byte("+ACK")))
	must(t, nc.Flush())
	select {
	case v := <-violations:
		if !strings.Contains(strings.ToLower(v.Error()), "permissions violation") {
			t.Fatalf("got %v, want a permissions violation", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the streamer answered a delivery's reply subject")
	}
	// What it may publish outside JetStream reads: into readers' inboxes.
	must(t, nc.Publish(contracts.SubjectReaderInbox("p1", "n1")+".r1", []byte(`{}`)))
	must(t, nc.Flush())
	select {
	case v := <-violations:
		t.Fatalf("answering a reader's inbox: %v", v)
	case <-time.After(200 * time.Millisecond):
	}
}

// The admin provisions: it may do all of it.
func TestAdminMayProvision(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, js, _ := f.connect(t, natsserver.RoleAdmin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, a := range actions() {
		if a.name == "delete stream" {
			continue
		}
		if err := a.do(ctx, js); err != nil {
			t.Errorf("admin: %s: %v", a.name, err)
		}
	}
}

type action struct {
	name string
	do   func(context.Context, jetstream.JetStream) error
}

// actions are what one service or another does on NATS.
func actions() []action {
	const project = "p1"
	jobsSubject := contracts.SubjectJobsAt(contracts.PriorityNormal)
	kvPutKey := func(bucket, key string) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			kv, err := js.KeyValue(ctx, bucket)
			if err != nil {
				return err
			}
			_, err = kv.Put(ctx, key, []byte("x"))
			return err
		}
	}
	kvPut := func(bucket string) func(context.Context, jetstream.JetStream) error {
		return kvPutKey(bucket, "key.test")
	}
	kvGet := func(bucket, key string) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			kv, err := js.KeyValue(ctx, bucket)
			if err != nil {
				return err
			}
			_, err = kv.Get(ctx, key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return nil
			}
			return err
		}
	}
	kvWatch := func(bucket, keys string) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			kv, err := js.KeyValue(ctx, bucket)
			if err != nil {
				return err
			}
			w, err := kv.Watch(ctx, keys, jetstream.UpdatesOnly())
			if err != nil {
				return err
			}
			return w.Stop()
		}
	}
	publish := func(subject string) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, subject, []byte("{}"))
			return err
		}
	}
	fetchJobs := func(ctx context.Context, js jetstream.JetStream) error {
		c, err := js.CreateOrUpdateConsumer(ctx, contracts.StreamJobs, jetstream.ConsumerConfig{
			Durable: contracts.ConsumerJobs(contracts.PriorityNormal), FilterSubject: jobsSubject, AckPolicy: jetstream.AckExplicitPolicy,
		})
		if err != nil {
			return err
		}
		batch, err := c.FetchNoWait(1)
		if err != nil {
			return err
		}
		for range batch.Messages() {
		}
		return batch.Error()
	}
	readOutput := func(ctx context.Context, js jetstream.JetStream) error {
		c, err := js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contracts.SubjectStreamOutput("s1")}})
		if err != nil {
			return err
		}
		_, err = c.Info(ctx)
		return err
	}
	lastOutput := func(ctx context.Context, js jetstream.JetStream) error {
		s, err := js.Stream(ctx, contracts.StreamOutput)
		if err != nil {
			return err
		}
		_, err = s.GetLastMsgForSubject(ctx, contracts.SubjectOutput("p1", "s1"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		return err
	}
	// The API lists a project's queued jobs when the project is deleted.
	listJobs := func(ctx context.Context, js jetstream.JetStream) error {
		s, err := js.Stream(ctx, contracts.StreamJobs)
		if err != nil {
			return err
		}
		_, err = s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(contracts.SubjectJobsPrefix+".*."+project))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		return err
	}
	deleteStream := func(ctx context.Context, js jetstream.JetStream) error {
		return js.DeleteStream(ctx, contracts.StreamAudit)
	}
	updateStream := func(ctx context.Context, js jetstream.JetStream) error {
		_, err := topology.Ensure(ctx, js, topology.Config{Memory: true, OutputMaxAge: time.Hour})
		return err
	}
	return []action{
		{"put access", kvPut(contracts.BucketAccess)},
		{"get project", kvGet(contracts.BucketAccess, "project."+project)},
		{"get key", kvGet(contracts.BucketAccess, "key.k1")},
		{"get token secret", kvGet(contracts.BucketAccess, "meta.token_secret")},
		{"watch projects", kvWatch(contracts.BucketAccess, "project.>")},
		{"watch access", kvWatch(contracts.BucketAccess, ">")},
		{"put state", kvPut(contracts.BucketState)},
		{"get state", kvGet(contracts.BucketState, "absent")},
		{"put queue pause", kvPut(contracts.BucketQueues)},
		{"get queue pause", kvGet(contracts.BucketQueues, contracts.PauseKey(contracts.PriorityHigh))},
		{"watch queue pauses", kvWatch(contracts.BucketQueues, "pause.>")},
		{"publish job", publish(contracts.SubjectJob(contracts.PriorityNormal, project))},
		{"fetch jobs", fetchJobs},
		{"list jobs", listJobs},
		{"publish output", publish(contracts.SubjectOutput(project, "s1"))},
		{"publish event", publish(contracts.SubjectEvent(project, "s1", contracts.EventQueued))},
		{"publish audit", publish(contracts.SubjectAuditPrefix + "." + project + ".test")},
		{"publish dead letter", publish(contracts.SubjectDead(project))},
		{"read output", readOutput},
		{"last output line", lastOutput},
		{"put webhook", kvPutKey(contracts.BucketWebhooks, contracts.WebhookKey(project, "wh_1"))},
		{"get webhook", kvGet(contracts.BucketWebhooks, contracts.WebhookKey(project, "wh_1"))},
		{"watch webhooks", kvWatch(contracts.BucketWebhooks, "endpoint.>")},
		{"put delivery", kvPutKey(contracts.BucketWebhookDeliveries, contracts.WebhookDeliveryKey("wh_1", "msg_1"))},
		{"get delivery", kvGet(contracts.BucketWebhookDeliveries, contracts.WebhookDeliveryKey("wh_1", "msg_1"))},
		{"put lease", kvPutKey(contracts.BucketWebhookDeliveries, contracts.WebhookLeaseKey("wh_1"))},
		{"publish webhook audit", publish(contracts.SubjectAudit(project, contracts.AuditWebhookDisabled))},
		{"update streams", updateStream},
		{"delete stream", deleteStream},
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A client port or a node's route port in use fails Start at once with
// the listener's error, not after the readiness timeout (a server whose
// route listener failed never reports ready).
func TestBusyPortFailsAtOnce(t *testing.T) {
	t.Parallel()
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	free, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	must(t, err)
	freeAddr := free.Addr().String()
	must(t, free.Close())
	for name, cfg := range map[string]natsserver.Config{
		"client": {Addr: ln.Addr().String()},
		"route":  {Addr: freeAddr, Cluster: &natsserver.Cluster{Name: "c", NodeName: "n0", RouteAddr: ln.Addr().String()}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.StoreDir, cfg.ReadyTimeout = t.TempDir(), time.Minute
			began := time.Now()
			srv, err := natsserver.Start(cfg)
			if err == nil {
				srv.Shutdown()
				t.Fatal("Start on a busy port succeeded")
			}
			if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), ln.Addr().String()) {
				t.Errorf("error %q does not say %s is in use", err, ln.Addr())
			}
			if took := time.Since(began); took > 5*time.Second {
				t.Errorf("Start took %s to fail", took)
			}
		})
	}
}

// The system user lists connections and closes one, and may do nothing
// else: no RELOAD, no other $SYS subject, nothing of rdev's account.
func TestSystemUser(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sys, _, violations := f.connect(t, natsserver.RoleSystem)
	closed := make(chan struct{})
	opt, err := nats.NkeyOptionFromSeed(f.creds.SeedFile(natsserver.RoleStreamer))
	must(t, err)
	// No reconnect: the kick's effect is seen, not hidden by a new connection.
	victim, err := nats.Connect(f.srv.ClientURL(), opt, nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	must(t, err)
	t.Cleanup(victim.Close)
	victimID, err := victim.GetClientID()
	must(t, err)

	reply, err := sys.Request(natsserver.SubjectConnzPing, []byte(`{"auth":true}`), 5*time.Second)
	must(t, err)
	var connz struct {
		Server struct {
			ID string `json:"id"`
		} `json:"server"`
		Data struct {
			Conns []struct {
				CID  uint64 `json:"cid"`
				User string `json:"authorized_user"`
			} `json:"connections"`
		} `json:"data"`
	}
	must(t, json.Unmarshal(reply.Data, &connz))
	if !slices.ContainsFunc(connz.Data.Conns, func(c struct {
		CID  uint64 `json:"cid"`
		User string `json:"authorized_user"`
	}) bool {
		return c.CID == victimID && c.User == f.creds.Public[natsserver.RoleStreamer]
	}) {
		t.Fatalf("CONNZ lists %+v, without the streamer's connection %d", connz.Data.Conns, victimID)
	}
	kick := strings.Replace(natsserver.SubjectServerKick, "*", connz.Server.ID, 1)
	_, err = sys.Request(kick, []byte(fmt.Sprintf(`{"cid":%d}`, victimID)), 5*time.Second)
	must(t, err)
	select {
	case <-closed:
	case <-time.After(10 * time.Second): // generous: a loaded machine
		t.Fatal("the kicked connection is still open")
	}

	refused := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: allowed", what)
		}
		select {
		case v := <-violations:
			if !strings.Contains(strings.ToLower(v.Error()), "permissions violation") {
				t.Fatalf("%s: %v, then %v: want a permissions violation", what, err, v)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: %v, not a permissions violation", what, err)
		}
	}
	reload := "$SYS.REQ.SERVER." + connz.Server.ID + ".RELOAD"
	_, err = sys.Request(reload, nil, time.Second)
	refused("reload", err)
	_, err = sys.Request("$SYS.REQ.SERVER.PING.VARZ", nil, time.Second)
	refused("varz", err)
	sub, err := sys.SubscribeSync("$SYS.>")
	must(t, err)
	_, err = sub.NextMsg(time.Second)
	refused("subscribe $SYS.>", err)
	must(t, sys.Publish(contracts.SubjectJobsPrefix+".default", []byte("{}")))
	must(t, sys.Flush())
	refused("publish a job", errors.New("published"))
	_, err = sys.Request("$JS.API.INFO", nil, time.Second)
	refused("JetStream", err)
}
