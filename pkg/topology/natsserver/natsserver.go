// Package natsserver runs an embedded NATS server with JetStream, the
// default transport of `rdev up` and of every test, and defines rdev's NATS
// users: one role per service with its least privilege (Permissions), and
// the nkey credentials `rdev up` keeps in its data directory.
package natsserver

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says where the embedded server listens and stores.
type Config struct {
	// Addr is host:port for NATS clients; port 0 picks a free one.
	Addr string
	// StoreDir is the JetStream file storage directory.
	StoreDir string
	// ReadyTimeout bounds the wait for the server to accept clients.
	ReadyTimeout time.Duration

	// Users, when set, are the only clients admitted: anonymous
	// connections are refused. Without users the server is open (tests,
	// and the nodes of a test cluster). A RoleSystem user is placed in
	// the system account (SystemAccount), every other in the global one.
	Users []User

	// Cluster, when set, makes the server one node of a JetStream cluster.
	Cluster *Cluster

	// CalloutIssuer, when set with Users, turns on the auth callout: a
	// client that is none of the Users is admitted only if the API,
	// serving $SYS.REQ.USER.AUTH, answers with a user JWT signed by this
	// account public key (A…) — a direct subscriber's NATS credential.
	// The Users bypass the callout.
	CalloutIssuer string
}

// User is one client the server admits: a public nkey signing in with
// its role's Permissions.
type User struct {
	Role Role
	// NKey is the user's public key (U…).
	NKey string
}

// Cluster says how a node joins a JetStream cluster: every node of one
// cluster has the same Name and Routes and its own NodeName and RouteAddr.
type Cluster struct {
	// Name of the cluster.
	Name string
	// NodeName is this node's unique server name (JetStream's peer id is
	// derived from it, so a restarted node must keep it).
	NodeName string
	// RouteAddr is host:port this node accepts routes on.
	RouteAddr string
	// Routes are the route addresses of every node (its own included).
	Routes []string
	// NoAdvertise keeps the node from telling clients the client URLs of
	// the cluster's other nodes (nats-server's cluster no_advertise), so a
	// client stays on the node it was given. It does not stop route gossip:
	// a test's route proxies turn that off themselves (natstest).
	NoAdvertise bool
}

// Start runs a server and waits until it accepts connections. Stop it with
// Shutdown followed by WaitForShutdown.
func Start(cfg Config) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsserver: a store directory is required")
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	host, port := "127.0.0.1", -1
	if cfg.Addr != "" {
		h, p, err := net.SplitHostPort(cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("natsserver: address %q: %w", cfg.Addr, err)
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("natsserver: port %q: %w", p, err)
		}
		host, port = h, n
		if n == 0 {
			port = server.RANDOM_PORT
		}
	}
	opts := &server.Options{
		Host:      host,
		Port:      port,
		JetStream: true,
		StoreDir:  cfg.StoreDir,
		NoSigs:    true,
		NoLog:     true,
		// Output bursts publish many messages before the first ack returns.
		MaxPending: 256 << 20,
		// Every fast batch of output lines subscribes to an inbox of its
		// own and unsubscribes at its end, and with a subject cache the
		// server walks the cache (a thousand subjects, churned by unique
		// acknowledgement and key subjects) at each: a tenth of the
		// process's CPU with jobs printing steadily (performance.md,
		// "Output printed steadily").
		NoSublistCache: true,
	}
	if len(cfg.Users) > 0 {
		// Declared as a configuration file declares it: without an
		// authorization block, a server whose only accounts are the
		// global and the system one adds a user without password to the
		// global account and admits anonymous clients as that user.
		if err := opts.ProcessConfigString("authorization {}"); err != nil {
			return nil, fmt.Errorf("natsserver: %w", err)
		}
	}
	var sys *server.Account
	for _, u := range cfg.Users {
		if u.NKey == "" {
			return nil, fmt.Errorf("natsserver: user %s has no key", u.Role)
		}
		nu := &server.NkeyUser{Nkey: u.NKey, Permissions: Permissions(u.Role)}
		if u.Role == RoleSystem {
			// The system account by name, as a cluster's configuration
			// names it (system_account: SYS).
			if sys == nil {
				sys = server.NewAccount(SystemAccount)
				opts.SystemAccount, opts.Accounts = SystemAccount, append(opts.Accounts, sys)
			}
			nu.Account = sys
		}
		opts.Nkeys = append(opts.Nkeys, nu)
	}
	if cfg.CalloutIssuer != "" {
		if len(cfg.Users) == 0 {
			return nil, errors.New("natsserver: an auth callout needs users (the API's among them)")
		}
		opts.AuthCallout = &server.AuthCallout{Issuer: cfg.CalloutIssuer, Account: server.DEFAULT_GLOBAL_ACCOUNT}
		for _, u := range cfg.Users {
			opts.AuthCallout.AuthUsers = append(opts.AuthCallout.AuthUsers, u.NKey)
		}
	}
	if c := cfg.Cluster; c != nil {
		if err := cluster(opts, c); err != nil {
			return nil, err
		}
	}
	if err := portFree(host, port); err != nil {
		return nil, err
	}
	if c := cfg.Cluster; c != nil {
		if err := portFree(opts.Cluster.Host, opts.Cluster.Port); err != nil {
			return nil, err
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(cfg.ReadyTimeout) {
		srv.Shutdown()
		err := fmt.Errorf("natsserver: not ready within %s on %s", cfg.ReadyTimeout, cfg.Addr)
		// Another process may have taken a port between portFree and the
		// server's listen, which the server only logs: say so, so that a
		// caller able to move to another port (tests) does.
		if perr := portFree(host, port); perr != nil {
			return nil, fmt.Errorf("%w: %w", err, perr)
		}
		if c := cfg.Cluster; c != nil {
			if perr := portFree(opts.Cluster.Host, opts.Cluster.Port); perr != nil {
				return nil, fmt.Errorf("%w: %w", err, perr)
			}
		}
		return nil, err
	}
	return srv, nil
}

// portFree fails at once when the client port (or a node's route port)
// is taken: the server itself would only log the listen error, leaving
// Start to wait out ReadyTimeout for a server that never comes up.
func portFree(host string, port int) error {
	if port <= 0 {
		return nil // a random port is free by construction
	}
	hostPort := net.JoinHostPort(host, strconv.Itoa(port))
	addr, err := net.ResolveTCPAddr("tcp", hostPort)
	if err != nil {
		return fmt.Errorf("natsserver: address %s: %w", hostPort, err)
	}
	ln, err := net.ListenTCP("tcp", addr)
	if err != nil {
		return fmt.Errorf("natsserver: listen on %s: %w", hostPort, err)
	}
	return ln.Close()
}

func cluster(opts *server.Options, c *Cluster) error {
	h, p, err := net.SplitHostPort(c.RouteAddr)
	if err != nil {
		return fmt.Errorf("natsserver: route address %q: %w", c.RouteAddr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return fmt.Errorf("natsserver: route port %q: %w", p, err)
	}
	opts.ServerName = c.NodeName
	opts.Cluster.Name, opts.Cluster.Host, opts.Cluster.Port = c.Name, h, n
	opts.Cluster.NoAdvertise = c.NoAdvertise
	for _, r := range c.Routes {
		u, err := url.Parse("nats://" + r)
		if err != nil {
			return fmt.Errorf("natsserver: route %q: %w", r, err)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}
