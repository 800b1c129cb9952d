package deploy

import (
	"flag"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
)

var update = flag.Bool("update", false, "rewrite deploy/helm/nats-values.yaml from natsserver.Permissions")

var natsValuesFile = repoPath("deploy", "helm", "nats-values.yaml")

const natsValuesHeader = `# Values of the official NATS Helm chart for rdev: a three-node JetStream
# cluster on persistent volumes, monitoring on (KEDA reads consumer lag
# there), and rdev's users with the least privilege of each service (the
# API's system user in the system account).
# The passwords come from the Secret rdev-secrets (keys nats-<user>-password,
# nats-system-password among them),
# and the auth callout issuer's public key (nats-callout-issuer) too,
# the same one the rdev chart reads (secrets.existingSecret); create it in
# both namespaces (docs/deployment.md).
#
# Generated from pkg/topology/natsserver (Permissions), which the embedded
# server of rdev up uses. Regenerate: go test ./deploy -run TestNATSValues -update
`

// natsValues builds the NATS chart's values. The chart renders config.merge
// into nats.conf; << $VAR >> stays unquoted, so NATS reads the variable.
func natsValues() map[string]any {
	var users, authUsers []any
	env := map[string]any{}
	for _, r := range natsserver.Roles() {
		authUsers = append(authUsers, string(r))
		p := natsserver.Permissions(r)
		v := "RDEV_NATS_" + strings.ToUpper(string(r)) + "_PASSWORD"
		perms := map[string]any{
			"publish":   map[string]any{"allow": p.Publish.Allow},
			"subscribe": map[string]any{"allow": p.Subscribe.Allow},
		}
		if p.Response != nil {
			perms["allow_responses"] = map[string]any{"max": p.Response.MaxMsgs, "expires": p.Response.Expires.String()}
		}
		users = append(users, map[string]any{"user": string(r), "password": "<< $" + v + " >>", "permissions": perms})
		env[v] = map[string]any{"valueFrom": map[string]any{"secretKeyRef": map[string]any{"name": "rdev-secrets", "key": "nats-" + string(r) + "-password"}}}
	}
	env["RDEV_NATS_CALLOUT_ISSUER"] = map[string]any{"valueFrom": map[string]any{"secretKeyRef": map[string]any{"name": "rdev-secrets", "key": "nats-callout-issuer"}}}
	// The API's user of the system account: lists connections and closes
	// revoked direct subscribers' (docs/nats.md).
	sys := natsserver.Permissions(natsserver.RoleSystem)
	authUsers = append(authUsers, string(natsserver.RoleSystem))
	env["RDEV_NATS_SYSTEM_PASSWORD"] = map[string]any{"valueFrom": map[string]any{"secretKeyRef": map[string]any{"name": "rdev-secrets", "key": "nats-system-password"}}}
	accounts := map[string]any{natsserver.SystemAccount: map[string]any{"users": []any{map[string]any{
		"user": string(natsserver.RoleSystem), "password": "<< $RDEV_NATS_SYSTEM_PASSWORD >>",
		"permissions": map[string]any{"publish": map[string]any{"allow": sys.Publish.Allow}, "subscribe": map[string]any{"allow": sys.Subscribe.Allow}},
	}}}}
	return map[string]any{
		"config": map[string]any{
			"cluster":   map[string]any{"enabled": true, "replicas": 3},
			"jetstream": map[string]any{"enabled": true, "fileStore": map[string]any{"enabled": true, "pvc": map[string]any{"enabled": true, "size": "10Gi"}}},
			"monitor":   map[string]any{"enabled": true},
			// Direct subscribers: any other client is admitted only when
			// the API (the auth callout) answers with a user JWT signed
			// by the issuer account key (docs/nats.md).
			"merge": map[string]any{"authorization": map[string]any{"users": users, "auth_callout": map[string]any{
				"issuer": "<< $RDEV_NATS_CALLOUT_ISSUER >>", "auth_users": authUsers,
			}}, "system_account": natsserver.SystemAccount, "accounts": accounts},
		},
		"container": map[string]any{"env": env},
		"podTemplate": map[string]any{"topologySpreadConstraints": map[string]any{"kubernetes.io/hostname": map[string]any{
			"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule",
		}}},
	}
}

// deploy/helm/nats-values.yaml gives rdev's users exactly the permissions
// of the embedded server, on a cluster as the issue asks.
func TestNATSValues(t *testing.T) {
	t.Parallel()
	b, err := yaml.Marshal(natsValues())
	if err != nil {
		t.Fatal(err)
	}
	want := natsValuesHeader + "\n" + string(b)
	if *update {
		if err := os.WriteFile(natsValuesFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(mustRead(t, natsValuesFile)); got != want {
		t.Fatal("deploy/helm/nats-values.yaml is stale: go test ./deploy -run TestNATSValues -update")
	}
}
