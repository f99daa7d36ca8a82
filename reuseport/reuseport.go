// Package reuseport makes the listeners of a clusterflock pool: TCP listeners
// with SO_REUSEPORT set, so that several processes can each listen on the same
// address and the kernel spreads new connections among them.
//
// The socket options come from github.com/libp2p/go-reuseport (imported as
// goreuseport): it is the well-kept, portable form of the two setsockopt calls.
// What it does not do, this package adds: listeners are plain TCP, never
// MPTCP, because Go ≥ 1.24 listens with MPTCP by default and the kernel
// refuses reuseport BPF programs on MPTCP sockets.
package reuseport

import (
	"context"
	"net"

	goreuseport "github.com/libp2p/go-reuseport"
)

// Listen returns a TCP listener on addr (host:port) with SO_REUSEADDR and
// SO_REUSEPORT set, and multipath TCP off. network is "tcp", "tcp4" or "tcp6".
func Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: goreuseport.Control}
	lc.SetMultipathTCP(false)
	return lc.Listen(ctx, network, addr)
}
