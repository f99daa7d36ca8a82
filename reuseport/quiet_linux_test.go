package reuseport

import (
	"net"
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
	if hs, err := pendingHandshakes(port); err != nil {
		t.Skipf("sock_diag not available here: %v", err)
	} else if len(hs) != 0 {
		t.Fatalf("%d handshakes pending before any connection", len(hs))
	}
	c, err := net.DialTimeout("tcp", g.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hs, err := pendingHandshakes(port)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 {
		t.Fatalf("%d handshakes pending with one deferred connection, want 1", len(hs))
	}
	// WaitQuiet waits for it, then for the accept queue.
	start := time.Now()
	if s.WaitQuiet(100 * time.Millisecond) {
		t.Fatal("WaitQuiet reported quiet with a handshake pending")
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
	if !s.WaitQuiet(5 * time.Second) {
		t.Error("WaitQuiet did not see the socket quiet once its connection was accepted")
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
}
