package state_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// setupMany returns two stores on the state bucket of a fresh embedded
// server: one reading many records with batched direct gets, one
// reading them one by one (the reference the first must agree with).
func setupMany(t *testing.T, opts ...func(jetstream.JetStream) state.Option) (direct, single *state.Store, kv jetstream.KeyValue) {
	t.Helper()
	_, _, js := natstest.Provisioned(t)
	kv, err := js.KeyValue(t.Context(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	o := state.WithDirectGets(js)
	if len(opts) > 0 {
		o = opts[0](js)
	}
	return state.New(kv, o), state.New(kv), kv
}

// createJobs stores a queued state for each id.
func createJobs(t *testing.T, s *state.Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		st := contracts.JobState{V: contracts.Version, JobID: id, Status: contracts.StatusQueued, StreamID: "s-" + id}
		if _, err := s.Jobs.Create(t.Context(), id, st); err != nil {
			t.Fatal(err)
		}
	}
}

// checkMany reads ids through both stores and checks that each finds
// exactly the ids of want, each with its own state, in the order of ids.
func checkMany(t *testing.T, direct, single *state.Store, ids []string, want map[string]bool) {
	t.Helper()
	for name, s := range map[string]*state.Store{"direct": direct, "single": single} {
		vals, found, err := s.Jobs.GetMany(t.Context(), ids)
		if err != nil {
			t.Fatalf("%s GetMany: %v", name, err)
		}
		if len(vals) != len(ids) || len(found) != len(ids) {
			t.Fatalf("%s GetMany of %d ids: %d values, %d found flags", name, len(ids), len(vals), len(found))
		}
		for i, id := range ids {
			if found[i] != want[id] {
				t.Fatalf("%s GetMany: %s found = %v, want %v", name, id, found[i], want[id])
			}
			if found[i] && (vals[i].JobID != id || vals[i].StreamID != "s-"+id) {
				t.Fatalf("%s GetMany: position %d (%s) holds %+v", name, i, id, vals[i])
			}
		}
	}
}

func TestGetManyPresentMissingDeletedPurged(t *testing.T) {
	t.Parallel()
	direct, single, _ := setupMany(t)
	ctx := t.Context()
	createJobs(t, direct, "a", "b", "c", "d", "e")
	if err := direct.Jobs.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := direct.Jobs.Purge(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	// Out of order, with a repeat and a key never written.
	ids := []string{"e", "nope", "b", "a", "d", "c", "a"}
	checkMany(t, direct, single, ids, map[string]bool{"a": true, "c": true, "e": true})

	// A key deleted then written again is found with its new value.
	createJobs(t, direct, "b")
	checkMany(t, direct, single, ids, map[string]bool{"a": true, "b": true, "c": true, "e": true})
}

func TestGetManyNothingFound(t *testing.T) {
	t.Parallel()
	direct, single, _ := setupMany(t)
	checkMany(t, direct, single, []string{"x", "y"}, nil)
	checkMany(t, direct, single, nil, nil)
}

func TestGetManyAcrossRequests(t *testing.T) {
	t.Parallel()
	direct, single, _ := setupMany(t)
	// 1,000 ids, a page's most: four requests of at most 256 keys; one
	// job in seven never written, one in five deleted.
	ids := make([]string, 1000)
	want := map[string]bool{}
	for i := range ids {
		ids[len(ids)-1-i] = fmt.Sprintf("j%04d", i) // not the order written
		id := ids[len(ids)-1-i]
		if i%7 == 0 {
			continue
		}
		createJobs(t, direct, id)
		want[id] = true
		if i%5 == 0 {
			if err := direct.Jobs.Delete(t.Context(), id); err != nil {
				t.Fatal(err)
			}
			want[id] = false
		}
	}
	checkMany(t, direct, single, ids, want)
}

func TestGetManyAnswerCutShort(t *testing.T) {
	t.Parallel()
	// The server answers one message per request when max_bytes is 1:
	// every key must still be read, by asking again for the rest.
	direct, single, _ := setupMany(t, func(js jetstream.JetStream) state.Option { return state.WithDirectGetsMaxBytes(js, 1) })
	createJobs(t, direct, "a", "b", "c", "d")
	if err := direct.Jobs.Delete(t.Context(), "c"); err != nil {
		t.Fatal(err)
	}
	checkMany(t, direct, single, []string{"d", "missing", "c", "b", "a"}, map[string]bool{"a": true, "b": true, "d": true})
}

func TestGetManyExpired(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	ctx := t.Context()
	// A bucket of its own whose keys may carry a TTL: the one that
	// expires leaves a purge marker (kept for LimitMarkerTTL).
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "many_ttl", Storage: jetstream.MemoryStorage, LimitMarkerTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	direct, single := state.New(kv, state.WithDirectGets(js)), state.New(kv)
	createJobs(t, direct, "kept")
	if _, err := kv.Create(ctx, contracts.JobKey("gone"), []byte(`{"job_id":"gone","stream_id":"s-gone"}`), jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	checkMany(t, direct, single, []string{"gone", "kept"}, map[string]bool{"gone": true, "kept": true})
	// Bounded wait for the server to expire the key (1 s TTL; generous
	// for a loaded machine).
	await.Within(t, 30*time.Second, "the key with a TTL expires", func() bool {
		_, err := kv.Get(ctx, contracts.JobKey("gone"))
		return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
	})
	checkMany(t, direct, single, []string{"gone", "kept"}, map[string]bool{"kept": true})
}

func TestGetManyHonoursContext(t *testing.T) {
	t.Parallel()
	direct, _, _ := setupMany(t)
	createJobs(t, direct, "a")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := direct.Jobs.GetMany(ctx, []string{"a"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("GetMany with a cancelled context: %v, want context.Canceled", err)
	}
}
