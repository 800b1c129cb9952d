package natsauth

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
)

// DefaultSweepEvery is how often a Sweeper checks every open direct
// subscriber when nothing changed: it catches API keys that simply
// expired (no write announces that).
const DefaultSweepEvery = 30 * time.Second

// readerPrefix starts the user name the callout gives a direct
// subscriber's connection (the user JWT's name, which the server reports
// as the connection's authorized user in CONNZ).
const readerPrefix = "rdev-reader:"

// reader is what identifies a credential on its connection: the project,
// the incarnation it was issued for and the key that asked for it. Not a
// secret: the token is not in it.
type reader struct {
	project, incarnation, keyID string
}

// userName is the user JWT's name: rdev-reader:<project>:<incarnation>:<key id>.
// None of the three contains a colon (contracts.ValidProjectID, ULIDs,
// contracts.ValidID).
func (r reader) userName() string {
	return readerPrefix + r.project + ":" + r.incarnation + ":" + r.keyID
}

// parseReader reads a connection's authorized user; ok is false for any
// connection that is not a direct subscriber's.
func parseReader(user string) (r reader, ok bool) {
	rest, ok := strings.CutPrefix(user, readerPrefix)
	if !ok {
		return r, false
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return r, false
	}
	return reader{project: parts[0], incarnation: parts[1], keyID: parts[2]}, true
}

// Sweeper closes the open connections of direct subscribers whose
// credential no longer passes the callout's checks: its key revoked,
// deleted or expired, its project deleted or created again, or the
// client's address no longer among the project's allowed IPs. The server
// closes a connection only when its user JWT expires; the Sweeper, signed
// in as the system account's user (natsserver.RoleSystem), lists every
// server's connections (CONNZ) and has the server of each lost one close
// it (KICK). A kicked client's reconnect goes through the callout again
// and is refused.
//
// Every API replica may run one: kicking a connection twice is harmless.
type Sweeper struct {
	// Gate checks the access store, as the callout does at connect.
	Gate *access.StreamGate
	// Conn is the system user's connection.
	Conn *nats.Conn
	// Account is the account direct subscribers are placed in (the
	// callout's); "$G" unless set.
	Account string
	// Every is the period of the sweeps nothing triggered;
	// DefaultSweepEvery unless set.
	Every time.Duration
	// Timeout bounds one sweep: the CONNZ replies, the store look-ups and
	// the kicks. 10s unless set.
	Timeout time.Duration
	// Quiet is how long a sweep waits for one more server's CONNZ reply
	// after the last (the servers of a cluster answer one request each,
	// and how many there are is not known in advance). 500ms unless set.
	Quiet time.Duration
	// PageSize is how many connections one CONNZ reply lists; a server
	// with more is asked again for the next page. 1024 unless set.
	PageSize int
	// MinGap is the least time between two sweeps that changes asked for.
	// 1s unless set.
	MinGap time.Duration
	// Kicked, when set, is told of every connection closed.
	Kicked func()
	Log    *slog.Logger

	once   sync.Once
	wake   chan struct{}
	known  int  // servers that answered the last full CONNZ
	failed bool // the last sweep failed: log the next failure quietly
}

func (s *Sweeper) init() {
	s.once.Do(func() {
		s.wake = make(chan struct{}, 1)
		if s.Account == "" {
			s.Account = "$G"
		}
		if s.Every <= 0 {
			s.Every = DefaultSweepEvery
		}
		if s.Timeout <= 0 {
			s.Timeout = 10 * time.Second
		}
		if s.Quiet <= 0 {
			s.Quiet = 500 * time.Millisecond
		}
		if s.PageSize <= 0 {
			s.PageSize = 1024
		}
		if s.MinGap <= 0 {
			s.MinGap = time.Second
		}
	})
}

// Changed asks for a sweep soon: a key or a project changed. It never
// blocks; changes arriving during a sweep make one more.
func (s *Sweeper) Changed() {
	s.init()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run sweeps at start, after every Changed (at most one sweep per MinGap)
// and every Every, until ctx ends. Errors are logged; a failed sweep is
// retried at the next.
func (s *Sweeper) Run(ctx context.Context) {
	s.init()
	t := time.NewTicker(s.Every)
	defer t.Stop()
	full := true
	for {
		s.sweepLogged(ctx, full)
		gap := time.NewTimer(s.MinGap)
		select {
		case <-ctx.Done():
			gap.Stop()
			return
		case <-s.wake:
			full = false
			// Keys' last-use times change the access bucket too, up to
			// once a minute per key: changes coalesce into one sweep a gap.
			select {
			case <-ctx.Done():
				gap.Stop()
				return
			case <-gap.C:
			}
		case <-t.C:
			full = true
		}
		gap.Stop()
	}
}

func (s *Sweeper) sweepLogged(ctx context.Context, full bool) {
	kicked, err := s.sweep(ctx, full)
	switch {
	case err != nil && ctx.Err() != nil:
	case err != nil:
		level := slog.LevelWarn
		if s.failed {
			level = slog.LevelDebug // said already; not every 30s
		}
		s.failed = true
		s.Log.Log(ctx, level, "closing revoked NATS credentials' connections failed; retrying at the next sweep", "err", err)
	default:
		if s.failed {
			s.Log.Info("closing revoked NATS credentials' connections works again")
		}
		s.failed = false
	}
	if kicked > 0 {
		s.Log.Info("closed connections of revoked NATS credentials", "connections", kicked)
	}
}

// conn is one direct subscriber's connection, on one server.
type conn struct {
	server string
	cid    uint64
}

// credential is one credential used from one address: checked once,
// however many connections it opened.
type credential struct {
	reader
	client string
}

func (s *Sweeper) sweep(ctx context.Context, full bool) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	open := map[credential][]conn{}
	servers, err := s.list(ctx, full, func(server string, c connInfo) {
		if r, ok := parseReader(c.User); ok {
			k := credential{reader: r, client: c.IP}
			open[k] = append(open[k], conn{server: server, cid: c.CID})
		}
	})
	if err != nil {
		return 0, err
	}
	if full || servers > s.known {
		s.known = servers
	}
	rc := s.Gate.NewRecheck()
	kicked := 0
	var errs []error
	for cred, conns := range open {
		client, _ := netip.ParseAddr(cred.client)
		r := access.Reader{Token: true, Bound: true, Grant: access.Grant{KeyID: cred.keyID, Incarnation: cred.incarnation}}
		err := rc.Check(ctx, r, cred.project, cred.incarnation, client)
		var lost *access.Error
		if !errors.As(err, &lost) {
			if err != nil {
				errs = append(errs, fmt.Errorf("check credential of project %s: %w", cred.project, err))
			}
			continue
		}
		for _, c := range conns {
			closed, err := s.kick(ctx, c)
			if err != nil {
				errs = append(errs, err)
			}
			if !closed {
				continue
			}
			kicked++
			if s.Kicked != nil {
				s.Kicked()
			}
			s.Log.Debug("closed a revoked NATS credential's connection", "project", cred.project, "key_id", cred.keyID,
				"client", cred.client, "server", c.server, "cid", c.cid, "reason", lost.Message)
		}
	}
	return kicked, errors.Join(errs...)
}

// connInfo is what a sweep reads of a connection in a CONNZ reply
// (nats-server's ConnInfo).
type connInfo struct {
	CID  uint64 `json:"cid"`
	IP   string `json:"ip"`
	User string `json:"authorized_user"`
	// Account is empty for the global account ($G).
	Account string `json:"account"`
}

// connzReply is one server's answer to a CONNZ request (nats-server's
// ServerAPIResponse holding a Connz).
type connzReply struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Data *struct {
		Total  int        `json:"total"`
		Offset int        `json:"offset"`
		Conns  []connInfo `json:"connections"`
	} `json:"data"`
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

func (r connzReply) err() error {
	if r.Error != nil {
		return fmt.Errorf("server %s: %d %s", r.Server.ID, r.Error.Code, r.Error.Description)
	}
	if r.Data == nil || r.Server.ID == "" {
		return errors.New("CONNZ reply without data")
	}
	return nil
}

// connzRequest asks for every account's connections: nats-server reads
// an account's list of clients without the lock that guards a connecting
// client's id (Connz against initClient, v2.15.2 and v2.15.3), a data
// race the race detector caught in CI. The sweep keeps its account's
// connections itself.
type connzRequest struct {
	Auth   bool `json:"auth"`
	Offset int  `json:"offset"`
	Limit  int  `json:"limit"`
}

// list calls each for every connection of the direct subscribers'
// account on every server that answers, and returns how many answered.
// It waits for replies until Quiet passes without one — or, when not
// full, until as many servers as last time have answered.
func (s *Sweeper) list(ctx context.Context, full bool, each func(server string, c connInfo)) (int, error) {
	inbox := s.Conn.NewInbox()
	sub, err := s.Conn.SubscribeSync(inbox)
	if err != nil {
		return 0, fmt.Errorf("CONNZ: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, err := json.Marshal(connzRequest{Auth: true, Limit: s.PageSize})
	if err != nil {
		return 0, err
	}
	if err := s.Conn.PublishRequest(natsserver.SubjectConnzPing, inbox, req); err != nil {
		return 0, fmt.Errorf("CONNZ: %w", err)
	}
	var replies []connzReply
	for {
		wait, cancel := ctx, context.CancelFunc(func() {})
		if len(replies) > 0 {
			if !full && s.known > 0 && len(replies) >= s.known {
				break
			}
			wait, cancel = context.WithTimeout(ctx, s.Quiet)
		}
		m, err := sub.NextMsgWithContext(wait)
		cancel()
		if err != nil {
			if len(replies) > 0 && ctx.Err() == nil {
				break // quiet: every server that will answer did
			}
			return 0, fmt.Errorf("CONNZ: no server answered: %w", err)
		}
		var r connzReply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return 0, fmt.Errorf("CONNZ reply: %w", err)
		}
		if err := r.err(); err != nil {
			return 0, fmt.Errorf("CONNZ: %w", err)
		}
		replies = append(replies, r)
	}
	for _, r := range replies {
		if err := s.pages(ctx, r, each); err != nil {
			return 0, err
		}
	}
	return len(replies), nil
}

// pages calls each for the connections of the sweeper's account in r
// and in the pages of its server that follow.
func (s *Sweeper) pages(ctx context.Context, r connzReply, each func(server string, c connInfo)) error {
	for {
		for _, c := range r.Data.Conns {
			if account := cmp.Or(c.Account, "$G"); account == s.Account {
				each(r.Server.ID, c)
			}
		}
		next := r.Data.Offset + len(r.Data.Conns)
		if len(r.Data.Conns) == 0 || next >= r.Data.Total {
			return nil
		}
		req, err := json.Marshal(connzRequest{Auth: true, Offset: next, Limit: s.PageSize})
		if err != nil {
			return err
		}
		subject := strings.Replace(natsserver.SubjectServerConnz, "*", r.Server.ID, 1)
		m, err := s.Conn.RequestWithContext(ctx, subject, req)
		if err != nil {
			return fmt.Errorf("CONNZ of server %s from %d: %w", r.Server.ID, next, err)
		}
		id := r.Server.ID
		r = connzReply{}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return fmt.Errorf("CONNZ reply of server %s: %w", id, err)
		}
		if err := r.err(); err != nil {
			return fmt.Errorf("CONNZ: %w", err)
		}
	}
}

// kick has c's server close it; closed is false when it was gone
// already (it closed, or another replica kicked it).
func (s *Sweeper) kick(ctx context.Context, c conn) (closed bool, err error) {
	req, err := json.Marshal(struct {
		CID uint64 `json:"cid"`
	}{c.cid})
	if err != nil {
		return false, err
	}
	subject := strings.Replace(natsserver.SubjectServerKick, "*", c.server, 1)
	m, err := s.Conn.RequestWithContext(ctx, subject, req)
	if err != nil {
		return false, fmt.Errorf("close connection %d of server %s: %w", c.cid, c.server, err)
	}
	var r struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return false, fmt.Errorf("close connection %d of server %s: %w", c.cid, c.server, err)
	}
	if r.Error == nil {
		return true, nil
	}
	if strings.Contains(r.Error.Description, "no such client") {
		return false, nil
	}
	return false, fmt.Errorf("close connection %d of server %s: %s", c.cid, c.server, r.Error.Description)
}
