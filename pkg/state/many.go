package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// manyPerRequest is the most keys one batched direct get asks for:
	// nats-server answers at most 1,024 messages per request (more is
	// "413 Too Many Results"), and smaller requests let the pages of a
	// long read run side by side.
	manyPerRequest = 256
	// manyParallelism bounds the requests (or, without direct gets, the
	// single reads) of one GetMany in flight.
	manyParallelism = 8
	// manyTimeout bounds a request when ctx has no deadline: what
	// jetstream's own requests wait by default.
	manyTimeout = 5 * time.Second
)

// Option configures a Store.
type Option func(*Store)

// WithDirectGets lets GetMany read up to manyPerRequest records in one
// request (a multi-subject batched direct get, nats-server 2.11 or
// later, on a bucket that allows direct gets, as every key-value bucket
// made by nats.go does) over js's connection. Without it GetMany reads
// the records one by one.
func WithDirectGets(js jetstream.JetStream) Option {
	return func(s *Store) {
		s.direct = &directGets{nc: js.Conn(), subject: apiPrefix(js.Options()) + "DIRECT.GET.KV_" + s.kv.Bucket(),
			keyPrefix: "$KV." + s.kv.Bucket() + "."}
	}
}

// apiPrefix is the JetStream API's subject prefix for opts' domain or
// API prefix.
func apiPrefix(opts jetstream.JetStreamOptions) string {
	switch {
	case opts.APIPrefix != "":
		return strings.TrimSuffix(opts.APIPrefix, ".") + "."
	case opts.Domain != "":
		return "$JS." + opts.Domain + ".API."
	}
	return "$JS.API."
}

// GetMany returns the records of ids, in the order of ids: vals[i] is
// the record of ids[i] if found[i]. A record never written, deleted,
// purged or expired is not found, as with Get. Each record is its
// latest, read at its own moment: the records are not one snapshot.
//
// With WithDirectGets it costs one request per manyPerRequest ids; else
// one Get per id, manyParallelism at once.
func (r Records[T]) GetMany(ctx context.Context, ids []string) (vals []T, found []bool, err error) {
	vals, found = make([]T, len(ids)), make([]bool, len(ids))
	if len(ids) == 0 {
		return vals, found, nil
	}
	errs := make([]error, len(ids))
	sem := make(chan struct{}, manyParallelism)
	var wg sync.WaitGroup
	if r.direct == nil {
		for i, id := range ids {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				v, _, err := r.Get(ctx, id)
				switch {
				case errors.Is(err, ErrNotFound):
				case err != nil:
					errs[i] = err
				default:
					vals[i], found[i] = v, true
				}
			})
		}
		wg.Wait()
		return vals, found, errors.Join(errs...)
	}
	at := make(map[string][]int, len(ids)) // where each key's record goes
	keys := make([]string, 0, len(ids))
	for i, id := range ids {
		k := r.key(id)
		if at[k] == nil {
			keys = append(keys, k)
		}
		at[k] = append(at[k], i)
	}
	decode := r.decode
	if decode == nil {
		decode = func(b []byte, v *T) error { return json.Unmarshal(b, v) }
	}
	for start := 0; start < len(keys); start += manyPerRequest {
		part := keys[start:min(start+manyPerRequest, len(keys))]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			// Each key is in one part only, so parts write apart.
			errs[start] = r.direct.lastOf(ctx, part, func(key string, data []byte) error {
				for _, i := range at[key] {
					if err := decode(data, &vals[i]); err != nil {
						return fmt.Errorf("decode %s %s: %w", r.kind, ids[i], err)
					}
					found[i] = true
				}
				return nil
			})
			if errs[start] != nil {
				errs[start] = fmt.Errorf("read %d %s records: %w", len(part), r.kind, errs[start])
			}
		})
	}
	wg.Wait()
	return vals, found, errors.Join(errs...)
}

// directGets reads a bucket's latest values with batched direct gets.
type directGets struct {
	nc        *nats.Conn
	subject   string // $JS.API.DIRECT.GET.KV_<bucket>
	keyPrefix string // $KV.<bucket>.
	maxBytes  int    // asked of the server per answer; 0: its own bound
}

// The headers of a direct get's answers.
const (
	hdrStatus      = "Status"
	hdrDescription = "Description"
	hdrSubject     = "Nats-Subject"
	hdrNumPending  = "Nats-Num-Pending" // in the end of a batch: what did not fit
	hdrKVOperation = "KV-Operation"     // DEL or PURGE on a delete or purge marker
	// hdrMarkerReason is on a marker the server left where a key was
	// removed (MaxAge: its TTL ran out, Purge, Remove).
	hdrMarkerReason = "Nats-Marker-Reason"
)

// lastOf calls each with the value of every key of keys that holds one
// (not a delete or purge marker), in one request unless the server cut
// the answer short (its max bytes), then again for the keys not
// answered yet.
func (d *directGets) lastOf(ctx context.Context, keys []string, each func(key string, data []byte) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, manyTimeout)
		defer cancel()
	}
	for len(keys) > 0 {
		answered, complete, err := d.request(ctx, keys, each)
		if err != nil || complete {
			return err
		}
		if len(answered) == 0 {
			return errors.New("direct get answered nothing and said more is pending")
		}
		rest := keys[:0:0]
		for _, k := range keys {
			if !answered[k] {
				rest = append(rest, k)
			}
		}
		keys = rest
	}
	return nil
}

// request sends one batched direct get for keys' last messages and calls
// each for the values among them. It returns the keys answered, and
// whether the answer was complete (else the server held some back).
func (d *directGets) request(ctx context.Context, keys []string, each func(key string, data []byte) error) (map[string]bool, bool, error) {
	subjects := make([]string, len(keys))
	for i, k := range keys {
		subjects[i] = d.keyPrefix + k
	}
	req, err := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		MaxBytes  int      `json:"max_bytes,omitempty"`
	}{subjects, d.maxBytes})
	if err != nil {
		return nil, false, err
	}
	// Room for every answer and the end: the subscription never drops
	// one. A channel, not a callback, spares a goroutine per request.
	ch := make(chan *nats.Msg, len(keys)+1)
	inbox := d.nc.NewInbox()
	sub, err := d.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, false, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := d.nc.PublishRequest(d.subject, inbox, req); err != nil {
		return nil, false, err
	}
	answered := make(map[string]bool, len(keys))
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return nil, false, context.Cause(ctx)
		}
		if status := m.Header.Get(hdrStatus); status != "" && len(m.Data) == 0 {
			switch status {
			case "204": // the end of the batch
				pending, _ := strconv.ParseUint(m.Header.Get(hdrNumPending), 10, 64)
				return answered, pending == 0, nil
			case "404": // none of the keys holds a message
				return answered, true, nil
			case "503":
				return nil, false, fmt.Errorf("direct get: %w", nats.ErrNoResponders)
			default:
				return nil, false, fmt.Errorf("direct get: status %s %s", status, m.Header.Get(hdrDescription))
			}
		}
		if m.Header.Get(hdrNumPending) == "" {
			// A server before 2.11 answers with one message, no batch.
			return nil, false, errors.New("direct get: no batched answer: needs nats-server 2.11 or later")
		}
		key, ok := strings.CutPrefix(m.Header.Get(hdrSubject), d.keyPrefix)
		if !ok {
			return nil, false, fmt.Errorf("direct get: answer for subject %q, not a key of the bucket", m.Header.Get(hdrSubject))
		}
		answered[key] = true
		if marker(m.Header) {
			continue
		}
		if err := each(key, m.Data); err != nil {
			return nil, false, err
		}
	}
}

// marker reports a message that stands for a key's removal: a delete or
// purge marker, or one the server left when the key expired (what
// jetstream's KeyValue.Get reports as ErrKeyDeleted).
func marker(h nats.Header) bool {
	switch h.Get(hdrKVOperation) {
	case "DEL", "PURGE":
		return true
	case "":
		switch h.Get(hdrMarkerReason) {
		case "MaxAge", "Purge", "Remove":
			return true
		}
	}
	return false
}
