package natsserver

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Role is a NATS user of rdev: one per service, and the admin that
// provisions streams and buckets.
type Role string

// The roles, each with its own credentials and Permissions.
const (
	// RoleAdmin may do anything: it provisions the topology (rdev up's own
	// control connection, `rdev provision`) and is for operators.
	RoleAdmin Role = "admin"
	// RoleAPI stores job state and access records, queues jobs, writes
	// audit records and dead-letter decisions; it never consumes jobs.
	RoleAPI Role = "api"
	// RoleWorker consumes jobs, writes job state, output, events and dead
	// letters; it reads project records of the access bucket (never keys
	// or the token secret) and project secrets, and writes neither, nor the
	// audit log.
	RoleWorker Role = "worker"
	// RoleStreamer only reads output, job state and access records; never
	// project secrets. It answers direct subscribers' replay requests
	// once each (allow_responses), publishing nothing else.
	RoleStreamer Role = "streamer"
	// RoleNotifier consumes lifecycle events and dead letters (durable
	// consumers it shares with the other notifiers), reads stream
	// references and batches, keeps webhook deliveries and endpoint
	// health, and records endpoint disables in the audit log; never
	// jobs, keys or project secrets.
	RoleNotifier Role = "notifier"
)

// Roles lists every role of rdev's account, admin first. RoleSystem is
// not among them: it is a user of the system account.
func Roles() []Role { return []Role{RoleAdmin, RoleAPI, RoleWorker, RoleStreamer, RoleNotifier} }

// RoleSystem is the API's user in the server's system account
// (SystemAccount): it lists the connections of every server of the
// cluster (CONNZ) and closes those of direct subscribers whose credential
// no longer passes (KICK) — nothing else of the system account, which
// could otherwise reload servers or read every account's traffic.
const RoleSystem Role = "system"

// SystemAccount is the name of the system account rdev's servers
// configure (system_account), where RoleSystem's user lives.
const SystemAccount = "SYS"

// The system account's requests RoleSystem may make: list the
// connections of every server (a ping all servers answer) or of one (to
// page further), and close one connection of one server.
const (
	SubjectConnzPing   = "$SYS.REQ.SERVER.PING.CONNZ"
	SubjectServerConnz = "$SYS.REQ.SERVER.*.CONNZ"
	SubjectServerKick  = "$SYS.REQ.SERVER.*.KICK"
)

// AuthCalloutSubject is where the server asks the auth callout (the API)
// whether to admit a client that is none of rdev's role users.
const AuthCalloutSubject = server.AuthCalloutSubject

// responseTTL bounds how long a worker may answer a holds request, and
// the API an auth callout request.
const responseTTL = time.Minute

// Permissions returns the least privilege of role: what its service
// publishes and subscribes to, JetStream API calls included. The same sets
// are shipped as NATS configuration in deploy/nats/rdev-permissions.conf
// (PermissionsConf renders it; a test keeps the two equal).
func Permissions(r Role) *server.Permissions {
	kvState, kvAccess := "KV_"+contracts.BucketState, "KV_"+contracts.BucketAccess
	kvSecrets, kvQueues := "KV_"+contracts.BucketSecrets, "KV_"+contracts.BucketQueues
	kvHooks, kvDeliveries := "KV_"+contracts.BucketWebhooks, "KV_"+contracts.BucketWebhookDeliveries
	// Every service checks the topology at start (topology.Ensure) and
	// answers readiness from stream info.
	pub := []string{"$JS.API.INFO"}
	for _, s := range []string{contracts.StreamJobs, contracts.StreamOutput, contracts.StreamAudit, contracts.StreamDead, kvState, kvAccess, kvSecrets, kvQueues, kvHooks, kvDeliveries} {
		pub = append(pub, "$JS.API.STREAM.INFO."+s)
	}
	sub := []string{"_INBOX.>"} // replies: requests, acks of publishes, consumer deliveries
	var resp *server.ResponsePermission
	switch r {
	case RoleAdmin:
		return &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{">"}}, Subscribe: &server.SubjectPermission{Allow: []string{">"}}}
	case RoleAPI:
		// RDEV_JOBS is read to find a deleted project's queued jobs.
		pub = append(pub, read(kvState, kvAccess, contracts.StreamJobs, contracts.StreamOutput, contracts.StreamAudit, contracts.StreamDead)...)
		pub = append(pub, consume(kvState, kvAccess, contracts.StreamAudit, contracts.StreamDead)...)
		// The durable consumer that audits finished jobs reads terminal events.
		pub = append(pub, consume(contracts.StreamOutput)...)
		pub = append(pub, ack(contracts.StreamOutput)...)
		pub = append(pub,
			"$KV."+contracts.BucketState+".>", "$KV."+contracts.BucketAccess+".>",
			contracts.SubjectJobsPrefix+".>", contracts.SubjectEventsPrefix+".>", contracts.SubjectAuditPrefix+".>",
			contracts.SubjectCancelPrefix+".*",
			// Dead letters are removed when retried or purged.
			"$JS.API.STREAM.MSG.DELETE."+contracts.StreamDead, "$JS.API.STREAM.PURGE."+contracts.StreamDead,
		)
		// Project secrets: set, listed (a keys watch), deleted, checked.
		pub = append(pub, read(kvSecrets)...)
		pub = append(pub, consume(kvSecrets)...)
		pub = append(pub, "$KV."+contracts.BucketSecrets+".>")
		// Queue pauses: set by admins, read for GET /v1/queues. Cron
		// schedules: written by compare-and-set, listed with a watch.
		pub = append(pub, read(kvQueues)...)
		pub = append(pub, consume(kvQueues)...)
		pub = append(pub, "$KV."+contracts.BucketQueues+".>")
		// Webhook endpoints: managed; their deliveries: listed, read,
		// redelivered, and pings created.
		pub = append(pub, read(kvHooks, kvDeliveries)...)
		pub = append(pub, consume(kvHooks, kvDeliveries)...)
		pub = append(pub, "$KV."+contracts.BucketWebhooks+".>", "$KV."+contracts.BucketWebhookDeliveries+".delivery.>")
		// The auth callout: the server asks, the API answers once on the
		// request's reply subject (direct subscribers' credentials).
		sub = append(sub, AuthCalloutSubject)
		resp = &server.ResponsePermission{MaxMsgs: 1, Expires: responseTTL}
	case RoleWorker:
		pub = append(pub, read(kvState, contracts.StreamJobs, contracts.StreamOutput)...)
		pub = append(pub, consume(kvState, contracts.StreamJobs)...)
		// Of the access bucket, only project records (per-project limits).
		pub = append(pub, accessProjects()...)
		pub = append(pub, ack(contracts.StreamJobs)...)
		pub = append(pub,
			"$KV."+contracts.BucketState+".>",
			contracts.SubjectOutputPrefix+".>", contracts.SubjectEventsPrefix+".>", contracts.SubjectDeadPrefix+".>",
			contracts.SubjectHoldsPrefix+".*",
		)
		// Project secrets: read one by one when a job needs them, never written.
		pub = append(pub, read(kvSecrets)...)
		// Queue pauses: watched, never written.
		pub = append(pub, consume(kvQueues)...)
		sub = append(sub, contracts.SubjectCancelPrefix+".*", contracts.SubjectHoldsPrefix+".*")
		// A worker answers another's holds request on its reply subject.
		resp = &server.ResponsePermission{MaxMsgs: 1, Expires: responseTTL}
	case RoleStreamer:
		pub = append(pub, read(kvState, kvAccess, contracts.StreamOutput)...)
		// The access bucket is watched so that open streams end within
		// seconds of their key's revocation or their project's deletion.
		pub = append(pub, consume(contracts.StreamOutput, kvAccess)...)
		// Replay over NATS: direct subscribers' requests, answered into
		// the readers' inboxes and nowhere else (the streamer itself
		// answers only into the asking project's). Not allow_responses:
		// the server would record every message it delivers to the
		// streamer (each output line's ack subject) as a reply it may
		// send, and scan that record every 4,096 deliveries; a command
		// printing a million lines halved the live path's throughput.
		sub = append(sub, contracts.SubjectReplayPrefix+".>")
		pub = append(pub, contracts.ReaderInboxPrefix+".>")
	case RoleSystem:
		// Not the common set: the system account has no JetStream of rdev.
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{SubjectConnzPing, SubjectServerConnz, SubjectServerKick}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}
	case RoleNotifier:
		// Stream references (the job's trace) and batches of the state
		// bucket; endpoints watched and their health written; deliveries
		// and leases kept.
		pub = append(pub, read(kvState, kvHooks, kvDeliveries)...)
		pub = append(pub, consume(contracts.StreamOutput, contracts.StreamDead, kvHooks, kvDeliveries)...)
		pub = append(pub, ack(contracts.StreamOutput, contracts.StreamDead)...)
		pub = append(pub,
			"$KV."+contracts.BucketWebhooks+".>", "$KV."+contracts.BucketWebhookDeliveries+".>",
			contracts.SubjectAuditPrefix+".*."+string(contracts.AuditWebhookDisabled),
		)
	default:
		panic(fmt.Sprintf("natsserver: unknown role %q", r))
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
		Response:  resp,
	}
}

// read is getting single messages: KV gets and last-message lookups.
func read(streams ...string) []string {
	var out []string
	for _, s := range streams {
		out = append(out, "$JS.API.STREAM.MSG.GET."+s, "$JS.API.DIRECT.GET."+s, "$JS.API.DIRECT.GET."+s+".>")
	}
	return out
}

// consume is creating, pulling from and deleting consumers (ordered ones
// for replays and KV watches, durable ones for queues), with flow control.
// Acknowledging is separate (ack): only queue consumers need it.
func consume(streams ...string) []string {
	var out []string
	for _, s := range streams {
		out = append(out,
			"$JS.API.CONSUMER.CREATE."+s, "$JS.API.CONSUMER.CREATE."+s+".>", "$JS.API.CONSUMER.DURABLE.CREATE."+s+".*",
			"$JS.API.CONSUMER.INFO."+s+".*", "$JS.API.CONSUMER.DELETE."+s+".*", "$JS.API.CONSUMER.MSG.NEXT."+s+".*",
			"$JS.FC."+s+".>")
	}
	return out
}

// accessProjects is reading and watching the access bucket's project
// records and its layout mark, and nothing else of it: a worker's
// credential must not reveal key hashes or the stream-token secret. Gets
// are direct gets naming the key in the API subject (the bucket allows
// direct gets; STREAM.MSG.GET and a bare DIRECT.GET name it in the body,
// so they stay refused). A watch is an ordered consumer whose filter is
// in the API subject (nats-server 2.10+; nats.go uses that form for a
// single filter), and the server refuses a request whose body filters
// anything else.
func accessProjects() []string {
	s, keys := "KV_"+contracts.BucketAccess, "$KV."+contracts.BucketAccess+"."
	return []string{
		"$JS.API.DIRECT.GET." + s + "." + keys + "project.>",
		"$JS.API.DIRECT.GET." + s + "." + keys + "meta.layout",
		"$JS.API.CONSUMER.CREATE." + s + ".*." + keys + "project.>",
		"$JS.API.CONSUMER.INFO." + s + ".*", "$JS.API.CONSUMER.DELETE." + s + ".*",
		"$JS.FC." + s + ".>",
	}
}

func ack(streams ...string) []string {
	var out []string
	for _, s := range streams {
		out = append(out, "$JS.ACK."+s+".>")
	}
	return out
}

// PermissionsConf renders Permissions as NATS server configuration: one
// variable RDEV_<ROLE>_PERMISSIONS per role, for a server's
// authorization block to use (see deploy/nats/server.conf).
func PermissionsConf() string {
	var b strings.Builder
	b.WriteString("# rdev's NATS users: the least privilege of each service.\n")
	b.WriteString("# Generated from pkg/topology/natsserver (Permissions), which the embedded\n")
	b.WriteString("# server of `rdev up` uses; TestPermissionsConf keeps the two equal.\n")
	b.WriteString("# Regenerate: go test ./pkg/topology/natsserver -run TestPermissionsConf -update\n")
	for _, r := range append(Roles(), RoleSystem) {
		p := Permissions(r)
		b.WriteString("\n")
		if r == RoleSystem {
			b.WriteString("# The API's user in the system account (system_account: " + SystemAccount + "): it lists\n")
			b.WriteString("# connections and closes direct subscribers' whose credential was revoked.\n")
		}
		fmt.Fprintf(&b, "%s = {\n", PermissionsVar(r))
		list := func(name string, subjects []string) {
			fmt.Fprintf(&b, "  %s: {\n    allow: [\n", name)
			for _, s := range subjects {
				fmt.Fprintf(&b, "      %q\n", s)
			}
			b.WriteString("    ]\n  }\n")
		}
		list("publish", p.Publish.Allow)
		list("subscribe", p.Subscribe.Allow)
		if p.Response != nil {
			fmt.Fprintf(&b, "  allow_responses: {max: %d, expires: %q}\n", p.Response.MaxMsgs, p.Response.Expires.String())
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// PermissionsVar is the configuration variable holding role's permissions.
func PermissionsVar(r Role) string {
	return "RDEV_" + strings.ToUpper(string(r)) + "_PERMISSIONS"
}

// ReaderPermissions is what a direct NATS subscriber of one project may
// do with a credential the API minted (POST
// /v1/projects/{p}/nats-credentials): subscribe to the project's events
// and output (contracts.SubjectProjectEvents,
// contracts.SubjectProjectOutput), live, and to its own inbox (inbox,
// contracts.SubjectReaderInbox); publish replay requests of the project
// (contracts.SubjectProjectReplay), which a streamer answers on that
// inbox. Nothing else, not the JetStream API: the server checks neither a
// request's reply subject nor a consumer's deliver subject against
// permissions, so a pull request or a push consumer would let the holder
// have the server write the project's stored messages into any subject
// of rdev's account (a job subject, a KV key). The streamer checks a
// replay request's reply subject itself.
func ReaderPermissions(project, inbox string) jwt.Permissions {
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: []string{contracts.SubjectProjectReplay(project)}},
		Sub: jwt.Permission{Allow: []string{contracts.SubjectProjectEvents(project), contracts.SubjectProjectOutput(project), inbox + ".>"}},
	}
}
