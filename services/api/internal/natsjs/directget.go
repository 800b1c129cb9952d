package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// directTimeout bounds a request when ctx has no deadline: what
// jetstream's own requests wait by default.
const directTimeout = 5 * time.Second

// directReader reads a stream's messages with batched direct gets
// (nats-server 2.11+, a stream that allows direct gets): no consumer, so
// nothing kept on the server between reads, and an answer that is slow
// is waited for or is an error, never a message skipped.
type directReader struct {
	nc      *nats.Conn
	subject string // $JS.API.DIRECT.GET.<stream>
}

func newDirectReader(js jetstream.JetStream, stream string) directReader {
	prefix := "$JS.API."
	if o := js.Options(); o.APIPrefix != "" {
		prefix = strings.TrimSuffix(o.APIPrefix, ".") + "."
	} else if o.Domain != "" {
		prefix = "$JS." + o.Domain + ".API."
	}
	return directReader{nc: js.Conn(), subject: prefix + "DIRECT.GET." + stream}
}

// directRequest asks for up to Batch messages of the subject filter
// NextFor, from sequence Seq or, when Seq is 0, from StartTime.
type directRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
	NextFor   string     `json:"next_by_subj"`
	Batch     int        `json:"batch"`
}

// directMsg is one message of an answer.
type directMsg struct {
	seq     uint64
	pending uint64 // messages of the filter stored after it
	data    []byte
}

// batch sends req and calls each for the messages answered, in stream
// order, until each returns false. It reports whether the stream held
// more of the filter after the last message each was given.
func (r directReader) batch(ctx context.Context, req directRequest, each func(directMsg) bool) (more bool, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, directTimeout)
		defer cancel()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return false, err
	}
	// Room for the whole answer and its end: nothing is dropped, and a
	// channel spares a goroutine per request.
	ch := make(chan *nats.Msg, req.Batch+1)
	inbox := r.nc.NewInbox()
	sub, err := r.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return false, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := r.nc.PublishRequest(r.subject, inbox, body); err != nil {
		return false, err
	}
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return false, context.Cause(ctx)
		}
		if status := m.Header.Get("Status"); status != "" && len(m.Data) == 0 {
			switch status {
			case "204": // the end of the batch
				return more, nil
			case "404": // nothing of the filter from there
				return false, nil
			case "503":
				return false, fmt.Errorf("direct get: %w", nats.ErrNoResponders)
			default:
				return false, fmt.Errorf("direct get: status %s %s", status, m.Header.Get("Description"))
			}
		}
		dm := directMsg{data: m.Data}
		dm.seq, err = strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return false, fmt.Errorf("direct get: bad %s header", jetstream.SequenceHeader)
		}
		if dm.pending, err = strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64); err != nil {
			return false, errors.New("direct get: no batched answer: needs nats-server 2.11 or later")
		}
		more = dm.pending > 0
		if !each(dm) {
			return more, nil
		}
	}
}
