package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
)

// errNoMessages is what a direct get answers when nothing of the filter is
// stored from the sequence asked for.
var errNoMessages = errors.New("no messages")

// The headers of a batched direct get's messages.
const (
	hdrSubject    = "Nats-Subject"
	hdrSequence   = "Nats-Sequence"
	hdrNumPending = "Nats-Num-Pending" // messages of the filter after this one
)

// direct sends batched direct gets (nats-server 2.11+) to one stream, and
// the replays' message gets to its leader (see Store.leaderNext), and
// receives their answers on one subscription shared by every request: a
// subscription per request (what jetstreamext.GetBatch does) costs a
// subscribe and an unsubscribe, and nats.go allocates a 512 KiB channel
// for each, which under a storm of replays made the garbage collector the
// streamer's main work.
type direct struct {
	nc      *nats.Conn
	subject string // $JS.API.DIRECT.GET.<stream>

	once   sync.Once
	prefix string // the shared subscription's subject, less the last token
	err    error  // subscribing failed

	mu   sync.Mutex
	seq  uint64
	reqs map[string]chan *nats.Msg
}

func newDirect(nc *nats.Conn, subject string) *direct {
	return &direct{nc: nc, subject: subject, reqs: make(map[string]chan *nats.Msg)}
}

func (d *direct) start() error {
	d.once.Do(func() {
		d.prefix = d.nc.NewRespInbox() + "."
		_, d.err = d.nc.Subscribe(d.prefix+"*", d.deliver)
	})
	return d.err
}

// deliver hands an answer to the request waiting for it. It never blocks:
// a request's channel holds its whole batch, so a full one belongs to a
// request that gave up, and a message dropped here shows to a live request
// as a count of pending messages that skips one.
func (d *direct) deliver(m *nats.Msg) {
	token := m.Subject[len(d.prefix):]
	d.mu.Lock()
	ch := d.reqs[token]
	d.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- m:
	default:
	}
}

// getMsg is one message of a batch.
type getMsg struct {
	subject string
	seq     uint64
	data    []byte
	pending uint64 // messages of the filter stored after it, when read
}

// batch asks for up to n messages of filter from sequence seq, at most
// maxBytes of them, and calls each for every message in order. It returns
// errNoMessages when nothing is stored there, nil once the server said the
// batch is complete, and an error when each returns one, the server
// refuses the request or ctx ends first.
func (d *direct) batch(ctx context.Context, filter string, seq uint64, n, maxBytes int, each func(getMsg) error) error {
	req, err := json.Marshal(struct {
		Seq      uint64 `json:"seq"`
		NextFor  string `json:"next_by_subj"`
		Batch    int    `json:"batch"`
		MaxBytes int    `json:"max_bytes,omitempty"`
	}{seq, filter, n, maxBytes})
	if err != nil {
		return err
	}
	ch, done, err := d.ask(d.subject, req, n+1) // the batch and its end
	if err != nil {
		return err
	}
	defer done()
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		if status := m.Header.Get("Status"); status != "" && len(m.Data) == 0 {
			switch status {
			case "204": // end of the batch
				return nil
			case "404":
				return errNoMessages
			default:
				return fmt.Errorf("direct get of %s: status %s %s", filter, status, m.Header.Get("Description"))
			}
		}
		gm := getMsg{subject: m.Header.Get(hdrSubject), data: m.Data}
		if gm.seq, err = strconv.ParseUint(m.Header.Get(hdrSequence), 10, 64); err != nil {
			return fmt.Errorf("direct get of %s: bad %s header", filter, hdrSequence)
		}
		if gm.pending, err = strconv.ParseUint(m.Header.Get(hdrNumPending), 10, 64); err != nil {
			// A server before 2.11 answers a batch with one message.
			return fmt.Errorf("direct get of %s: no %s header: batched direct gets need nats-server 2.11 or later", filter, hdrNumPending)
		}
		if err := each(gm); err != nil {
			return err
		}
	}
}

// ask sends req to subject with a reply subject on the shared
// subscription, and returns the channel its answers arrive on, which
// holds n of them (more are dropped), and a func that stops receiving
// them.
func (d *direct) ask(subject string, req []byte, n int) (<-chan *nats.Msg, func(), error) {
	if err := d.start(); err != nil {
		return nil, nil, fmt.Errorf("subscribe to answers: %w", err)
	}
	ch := make(chan *nats.Msg, n)
	d.mu.Lock()
	d.seq++
	token := strconv.FormatUint(d.seq, 36)
	d.reqs[token] = ch
	d.mu.Unlock()
	done := func() {
		d.mu.Lock()
		delete(d.reqs, token)
		d.mu.Unlock()
	}
	if err := d.nc.PublishRequest(subject, d.prefix+token, req); err != nil {
		done()
		return nil, nil, err
	}
	return ch, done, nil
}
