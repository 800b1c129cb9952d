package natstest

import (
	"context"
	"net"
	"testing"

	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
)

// A node whose route port another process took moves to a free one, and
// the proxies to it follow; a free client port stays.
func TestMoveTakesAFreeRoutePort(t *testing.T) {
	taken, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = taken.Close() }()
	client := freeAddr(t)
	c := &Cluster{tb: t, cfgs: []natsserver.Config{{Addr: client, Cluster: &natsserver.Cluster{RouteAddr: taken.Addr().String()}}}}
	c.proxies = append(c.proxies, newProxy(t, taken.Addr().String(), 1, 0), newProxy(t, "127.0.0.1:1", 0, 1))

	if err := c.move(0); err != nil {
		t.Fatal(err)
	}
	route := c.cfgs[0].Cluster.RouteAddr
	if route == taken.Addr().String() {
		t.Fatalf("the route stayed on the taken %s", route)
	}
	if c.cfgs[0].Addr != client {
		t.Fatalf("the free client address moved: %s, was %s", c.cfgs[0].Addr, client)
	}
	if got := c.proxies[0].target; got != route {
		t.Fatalf("the proxy to node 0 targets %s, want %s", got, route)
	}
	if got := c.proxies[1].target; got != "127.0.0.1:1" {
		t.Fatalf("the proxy to node 1 was moved to %s", got)
	}
}
