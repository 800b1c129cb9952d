package natstest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
)

// Cluster is a JetStream cluster of embedded servers on loopback, each
// storing in its own temporary directory. A node can be stopped and
// started again on the same addresses and storage, and the cluster tells
// which node leads a stream, so tests can take exactly that one away.
type Cluster struct {
	tb      testing.TB
	mu      sync.Mutex
	cfgs    []natsserver.Config
	nodes   []*server.Server // nil while stopped
	proxies []*proxy
}

// NewCluster starts n nodes and waits until JetStream has a meta leader.
// t.Cleanup stops them.
func NewCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	routes := make([]string, n)
	clients := make([]string, n)
	for i := range n {
		routes[i], clients[i] = freeAddr(tb), freeAddr(tb)
	}
	c := &Cluster{tb: tb, cfgs: make([]natsserver.Config, n), nodes: make([]*server.Server, n)}
	// Node i reaches node j only through a proxy of its own, so that a
	// partition can cut exactly the routes of one node.
	for i := range n {
		var via []string
		for j := range n {
			if i != j {
				p := newProxy(tb, routes[j], i, j)
				c.proxies = append(c.proxies, p)
				via = append(via, p.addr)
			}
		}
		c.cfgs[i] = natsserver.Config{Addr: clients[i], StoreDir: tb.TempDir(), ReadyTimeout: 30 * time.Second,
			Cluster: &natsserver.Cluster{Name: "rdev-test", NodeName: fmt.Sprintf("n%d", i), RouteAddr: routes[i],
				Routes: via, NoAdvertise: true}}
	}
	// Nodes start at once: each waits for routes to the others.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			for attempt := 1; ; attempt++ {
				c.nodes[i], errs[i] = natsserver.Start(c.cfgs[i])
				if errs[i] == nil || !errors.Is(errs[i], syscall.EADDRINUSE) || attempt == 3 {
					return
				}
				// Another process took the client or the route port
				// between freeAddr and the listen (CI runs many tests
				// beside this one): move the one taken.
				if errs[i] = c.move(i); errs[i] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	tb.Cleanup(func() {
		for i := range n {
			c.Stop(i)
		}
	})
	for _, err := range errs {
		if err != nil {
			tb.Fatal(err)
		}
	}
	c.WaitMetaLeader(30 * time.Second)
	return c
}

// move gives node i, not started, a free address for each of its client
// and route ports that another process took; the proxies to the node
// follow its route.
func (c *Cluster) move(i int) error {
	cfg := &c.cfgs[i]
	for _, addr := range []*string{&cfg.Addr, &cfg.Cluster.RouteAddr} {
		if ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", *addr); err == nil {
			_ = ln.Close()
			continue
		}
		moved, err := pickAddr()
		if err != nil {
			return err
		}
		*addr = moved
	}
	for _, p := range c.proxies {
		if p.to == i {
			p.mu.Lock()
			p.target = cfg.Cluster.RouteAddr
			p.mu.Unlock()
		}
	}
	return nil
}

// URL returns every node's client URL, comma separated, as nats.Connect
// takes them.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.cfgs))
	for i, cfg := range c.cfgs {
		urls[i] = "nats://" + cfg.Addr
	}
	return strings.Join(urls, ",")
}

// NodeURL returns node i's client URL.
func (c *Cluster) NodeURL(i int) string { return "nats://" + c.cfgs[i].Addr }

// Stop shuts node i down; stopping a stopped node does nothing.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	srv := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Start starts node i again on its addresses and storage.
func (c *Cluster) Start(i int) {
	c.tb.Helper()
	srv, err := natsserver.Start(c.cfgs[i])
	if err != nil {
		c.tb.Fatal(err)
	}
	c.mu.Lock()
	c.nodes[i] = srv
	c.mu.Unlock()
}

// Partition cuts every route between node i and the others, and refuses
// new ones, while the node keeps running and serving its clients.
func (c *Cluster) Partition(i int) {
	for _, p := range c.proxies {
		if p.from == i || p.to == i {
			p.block(AllRoutes, true)
		}
	}
}

// Heal lets node i's routes connect again, whatever Partition or Cut
// blocked.
func (c *Cluster) Heal(i int) {
	for _, p := range c.proxies {
		if p.from == i || p.to == i {
			p.unblock()
		}
	}
}

// Routes selects which of the route connections between two nodes Cut
// cuts. nats-server links each pair of nodes by a pool of connections
// shared by the accounts, and by one connection of the system account's
// own.
type Routes int

const (
	// AllRoutes is every route between the two nodes.
	AllRoutes Routes = iota
	// SystemRoutes is the system account's route: JetStream's
	// replication (every stream's and the meta group's Raft traffic), its
	// API requests and their replies.
	SystemRoutes
	// AccountRoutes is the pool the accounts share: what clients publish
	// and subscribe to, direct gets and their answers among them.
	AccountRoutes
)

// Cut cuts the routes r between nodes i and j, and refuses new ones,
// while both keep running and keep their other routes. Heal(i) or
// Heal(j) undoes it.
func (c *Cluster) Cut(i, j int, r Routes) {
	for _, p := range c.proxies {
		if (p.from == i && p.to == j) || (p.from == j && p.to == i) {
			p.block(r, true)
		}
	}
}

// Server returns node i's server, or nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// NodeIndex returns the index of the node named name (a stream's cluster
// info names its leader and replicas so), or -1.
func (c *Cluster) NodeIndex(name string) int {
	for i, cfg := range c.cfgs {
		if cfg.Cluster.NodeName == name {
			return i
		}
	}
	return -1
}

// MetaLeader returns the index of the node leading the JetStream meta
// group, or -1 if none does now.
func (c *Cluster) MetaLeader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, srv := range c.nodes {
		if srv != nil && srv.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// Provision connects to every node and provisions the rdev topology with
// replicas, retrying while the new cluster still elects its leaders, and
// returns a JetStream context on that connection (closed by t.Cleanup)
// once every stream has a leader: a stream without one does not answer
// publishes yet.
func (c *Cluster) Provision(replicas int) jetstream.JetStream {
	c.tb.Helper()
	js := jetStreamAt(c.tb, c.URL())
	deadline := time.Now().Add(60 * time.Second)
	for {
		// A request sent before the cluster can answer it is never
		// answered: each try gets its own timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := topology.Ensure(ctx, js, topology.Config{Replicas: replicas})
		if err == nil {
			err = everyStreamLed(ctx, js)
		}
		cancel()
		if err == nil {
			return js
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("provision the cluster with %d replicas: %v", replicas, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// everyStreamLed returns nil when every stream reports a leader.
func everyStreamLed(ctx context.Context, js jetstream.JetStream) error {
	streams := js.ListStreams(ctx)
	for info := range streams.Info() {
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return fmt.Errorf("stream %s has no leader yet", info.Config.Name)
		}
	}
	return streams.Err()
}

// ConnectNode returns a JetStream context on a connection to node i only
// (a cluster's nodes do not tell clients of each other here), closed by
// t.Cleanup.
func (c *Cluster) ConnectNode(i int) jetstream.JetStream {
	c.tb.Helper()
	return jetStreamAt(c.tb, c.NodeURL(i))
}

func jetStreamAt(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// StreamLeader returns the index of the node leading stream (KV buckets
// are streams named KV_<bucket>), or -1 if none does now.
func (c *Cluster) StreamLeader(stream string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, srv := range c.nodes {
		if srv != nil && srv.JetStreamIsStreamLeader(srv.GlobalAccount().Name, stream) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits until some node leads stream and returns it.
func (c *Cluster) WaitStreamLeader(stream string, timeout time.Duration) int {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if i := c.StreamLeader(stream); i >= 0 {
			return i
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("no leader for stream %s within %s", stream, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitMetaLeader waits until the JetStream meta group has a leader.
func (c *Cluster) WaitMetaLeader(timeout time.Duration) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for ctx.Err() == nil {
		if c.MetaLeader() >= 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.tb.Fatalf("no JetStream meta leader within %s", timeout)
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := pickAddr()
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}

// FreeAddr returns a loopback address that was free when it was picked,
// for a server to listen on later (and again after a restart).
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	return freeAddr(tb)
}

// pickAddr returns a loopback address free when it was picked. Its port
// is below the kernel's ephemeral range: a port from that range (what
// listening on port 0 gives) may be taken by another test's outgoing
// connection before the server listens on it, and a cluster node whose
// route port is taken never starts. Below the range only another
// listener can take it, and the port is drawn at random.
func pickAddr() (string, error) {
	low := ephemeralLow()
	for range 200 {
		if low <= minPort {
			break
		}
		port := minPort + rand.IntN(low-minPort)
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		_ = ln.Close()
		return ln.Addr().String(), nil
	}
	// No room below the range (or all taken): any free port.
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String(), nil
}

// minPort is the lowest port pickAddr draws: above the well-known and
// most registered services' ports.
const minPort = 10000

// ephemeralLow is the first port of the kernel's ephemeral range (Linux;
// elsewhere the IANA range's start).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 49152
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 49152
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 49152
	}
	return low
}
