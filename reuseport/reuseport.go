// Package reuseport makes the listeners of a clusterflock pool: TCP listeners
// with SO_REUSEPORT set, so that several processes can each listen on the same
// address and the kernel spreads new connections among them, and port
// reservations that hold an address for the pool without receiving
// connections.
//
// The socket options come from github.com/libp2p/go-reuseport (imported as
// goreuseport): it is the well-kept, portable form of the two setsockopt calls.
// What it does not do, this package adds: listeners are plain TCP, never
// MPTCP, because Go ≥ 1.24 listens with MPTCP by default and the kernel
// refuses reuseport BPF programs on MPTCP sockets.
package reuseport

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"

	goreuseport "github.com/libp2p/go-reuseport"
)

// Listen returns a TCP listener on addr (host:port) with SO_REUSEADDR and
// SO_REUSEPORT set, and multipath TCP off. network is "tcp", "tcp4" or "tcp6".
func Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: goreuseport.Control}
	lc.SetMultipathTCP(false)
	return lc.Listen(ctx, network, addr)
}

// File returns a close-on-exec duplicate of ln's socket, to hold or to pass
// to a child process. Unlike (*net.TCPListener).File, passing it to a child
// (os/exec calls its Fd method) does not switch the socket, which the
// duplicate shares with ln and with every process that inherits it, to
// blocking mode: a listener whose socket turned blocking under it blocks a
// thread in accept(2), and its Close then waits for the next connection.
func File(ln net.Listener) (*os.File, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("reuseport: %T has no file descriptor", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = dupCloexec(int(fd))
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("reuseport: dup: %w", derr)
	}
	return os.NewFile(uintptr(nfd), "reuseport-listener"), nil
}
