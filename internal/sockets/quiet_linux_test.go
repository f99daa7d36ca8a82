package sockets

import (
	"context"
	"errors"
	"github.com/clusterflock/clusterflock/internal/sockdiag"
	"github.com/clusterflock/clusterflock/reuseport"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A listener with TCP_DEFER_ACCEPT keeps a connection whose client sent no
// data as a request socket in the SYN queue: a handshake WaitQuiet must see.
func TestPendingHandshakes(t *testing.T) {
	g, err := NewGroup("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer g.CloseAll()
	s, err := g.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.control(func(fd int) error {
		return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 5)
	}); err != nil {
		t.Fatal(err)
	}
	port, err := s.port()
	if err != nil {
		t.Fatal(err)
	}
	if hs, err := sockdiag.PendingHandshakes(port); err != nil {
		t.Skipf("sock_diag not available here: %v", err)
	} else if len(hs) != 0 {
		t.Fatalf("%d handshakes pending before any connection", len(hs))
	}
	c, err := net.DialTimeout("tcp", g.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hs, err := sockdiag.PendingHandshakes(port)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 {
		t.Fatalf("%d handshakes pending with one deferred connection, want 1", len(hs))
	}
	// WaitQuiet waits for it, then for the accept queue.
	start := time.Now()
	if err := s.WaitQuiet(100*time.Millisecond, nil); !errors.Is(err, ErrNotQuiet) {
		t.Fatalf("WaitQuiet with a handshake pending: %v, want ErrNotQuiet", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("WaitQuiet returned after %v, before its limit", d)
	}
	// Data completes the handshake: the connection moves to the accept
	// queue, and WaitQuiet waits until it has been accepted.
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() { // a worker still accepting
		f, err := s.File()
		if err != nil {
			accepted <- err
			return
		}
		defer f.Close()
		ln, err := net.FileListener(f)
		if err != nil {
			accepted <- err
			return
		}
		defer ln.Close()
		conn, err := ln.Accept()
		if err == nil {
			conn.Close()
		}
		accepted <- err
	}()
	if err := s.WaitQuiet(5*time.Second, nil); err != nil {
		t.Errorf("WaitQuiet once the connection was accepted: %v", err)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
}

// A group refuses to grow while a socket it does not hold listens on its
// address: its order would not be the kernel's.
func TestGroupVerify(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1", ""} {
		t.Run("host="+host, func(t *testing.T) {
			g, err := NewGroup(net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer g.CloseAll()
			if _, err := g.Listen(); err != nil {
				if host == "::1" {
					t.Skipf("no IPv6 loopback here: %v", err)
				}
				t.Fatal(err)
			}
			if err := g.Verify(); err != nil {
				t.Fatalf("Verify of a group holding its only socket: %v", err)
			}
			port, _ := g.Sockets()[0].port()
			if _, err := sockdiag.PendingHandshakes(port); err != nil {
				t.Skipf("sock_diag not available here: %v", err)
			}
			foreign, err := reuseport.Listen(context.Background(), "tcp", g.Addr())
			if err != nil {
				t.Fatal(err)
			}
			if err := g.Verify(); err == nil || !strings.Contains(err.Error(), "1 other socket") {
				t.Errorf("Verify with a foreign listener: %v, want it to name 1 other socket", err)
			}
			if _, err := g.Listen(); err == nil {
				t.Error("Listen succeeded with a foreign listener on the address")
			}
			if g.Len() != 1 {
				t.Errorf("after the refused Listen the group has %d sockets, want 1", g.Len())
			}
			foreign.Close()
			if err := g.Verify(); err != nil {
				t.Errorf("Verify after the foreign listener closed: %v", err)
			}
			if _, err := g.Listen(); err != nil {
				t.Errorf("Listen after the foreign listener closed: %v", err)
			}
		})
	}
}

// A socket closed here but still held by another process stays in the
// kernel's group at its index: the group keeps it there, never a target,
// until it is gone, and only then moves the last socket into its place.
func TestGroupCloseStillHeld(t *testing.T) {
	g := newTestGroup(t)
	var s [3]*Socket
	var err error
	for i := range s {
		if s[i], err = g.Listen(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sockdiag.PendingHandshakes(0); err != nil {
		t.Skipf("sock_diag not available here: %v", err)
	}
	held, err := s[1].File() // another holder of socket 1, as a draining worker would be
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Steer([]*Socket{s[0], s[2]}); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(s[1]); !errors.Is(err, ErrStillHeld) {
		t.Fatalf("Close of a socket another holder keeps: %v, want ErrStillHeld", err)
	}
	if g.Len() != 3 || g.Held() != 1 {
		t.Fatalf("after closing a held socket: %d sockets, %d held; want 3 and 1", g.Len(), g.Held())
	}
	heldSock := newSocket(int(held.Fd()))
	got := landings(t, g, []*Socket{s[0], heldSock, s[2]}, 40)
	if got[1] != 0 || got[0] == 0 || got[2] == 0 {
		t.Errorf("steered to sockets 0 and 2 while 1 is held elsewhere: landings %v, want none on 1", got)
	}
	if _, err := g.Listen(); err == nil {
		t.Error("Listen succeeded while a closed socket is still held elsewhere")
	}
	held.Close()
	if err := g.Steer([]*Socket{s[0], s[2]}); err != nil {
		t.Fatal(err)
	}
	if g.Len() != 2 || g.Held() != 0 || g.Index(s[2]) != 1 {
		t.Fatalf("after the other holder closed it: %d sockets, %d held, socket 2 at index %d; want 2, 0, 1", g.Len(), g.Held(), g.Index(s[2]))
	}
	got = landings(t, g, []*Socket{s[0], s[2]}, 40)
	if got[0] == 0 || got[1] == 0 {
		t.Errorf("after the held socket left: landings %v, want both used", got)
	}
}
