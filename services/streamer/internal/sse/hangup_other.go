//go:build !linux

package sse

import (
	"errors"
	"net"
)

// poller is Linux only; elsewhere Hangups reads each connection.
type poller struct{}

func newPoller() (*poller, error) { return nil, errors.New("no epoll") }

func (*poller) watch(net.Conn, func()) (func(), bool) { return nil, false }
func (*poller) close()                                {}
