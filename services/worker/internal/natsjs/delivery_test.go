package natsjs_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/worker/internal/natsjs"
	"github.com/rdev-dev/rdev/services/worker/internal/runner"
)

// A job message reaches the runner as a Delivery that says where it sits
// in the stream, how often it was delivered and the state revision its
// header carries; acknowledging it twice is not an error.
func TestDeliveryAdaptsAJobMessage(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	msg := nats.NewMsg(contracts.SubjectJob(contracts.PriorityNormal, "proj"))
	msg.Data = []byte(`{"v":1}`)
	msg.Header.Set(contracts.HeaderStateRevision, strconv.Itoa(7))
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := natsjs.JobConsumers(ctx, js, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons[1].Fetch(1, jetstream.FetchMaxWait(5*time.Second)) // normal priority
	if err != nil {
		t.Fatal(err)
	}
	var d runner.Delivery
	for m := range batch.Messages() {
		natsjs.Deliveries(func(_ context.Context, got runner.Delivery) { d = got })(ctx, m)
	}
	if d == nil {
		t.Fatal("no job message fetched")
	}
	info, err := d.Info()
	want := runner.DeliveryInfo{Sequence: ack.Sequence, NumDelivered: 1, StateRevision: 7}
	if err != nil || info != want {
		t.Fatalf("Info = %+v, %v; want %+v", info, err, want)
	}
	if string(d.Data()) != `{"v":1}` || d.Subject() != msg.Subject {
		t.Fatalf("Data %q, Subject %q", d.Data(), d.Subject())
	}
	for i := range 2 {
		if err := d.Ack(ctx); err != nil {
			t.Fatalf("Ack #%d: %v", i+1, err)
		}
	}
	if n := natstest.Msgs(t, js, contracts.StreamJobs); n != 0 {
		t.Fatalf("%d job messages left after the ack", n)
	}
}
