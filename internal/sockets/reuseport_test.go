package sockets

import (
	"context"
	"errors"
	"github.com/clusterflock/clusterflock/reuseport"
	"io"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReserveThenListenTwice(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "", "::1"} {
		t.Run("host="+host, func(t *testing.T) {
			r, err := Reserve(net.JoinHostPort(host, "0"))
			if err != nil {
				if host == "::1" {
					t.Skipf("no IPv6 loopback here: %v", err)
				}
				t.Fatal(err)
			}
			defer r.Close()
			_, port, _ := net.SplitHostPort(r.Addr())
			if port == "0" {
				t.Fatalf("Addr() = %q, want a concrete port", r.Addr())
			}
			// A program without SO_REUSEPORT cannot take the reserved port.
			if ln, err := net.Listen("tcp", r.Addr()); err == nil {
				ln.Close()
				t.Fatalf("plain listen on reserved %s succeeded", r.Addr())
			} else if !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("plain listen on reserved %s: %v, want EADDRINUSE", r.Addr(), err)
			}
			// Two reuseport listeners share it, and a client reaches one.
			for range 2 {
				ln, err := reuseport.Listen(context.Background(), "tcp", r.Addr())
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						io.WriteString(c, "hi")
						c.Close()
					}
				}()
			}
			dial := r.Addr()
			if host == "" {
				dial = net.JoinHostPort("127.0.0.1", port)
			}
			c, err := net.Dial("tcp", dial)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "hi" {
				t.Fatalf("read %q, %v; want \"hi\"", b, err)
			}
		})
	}
}

func TestReserveBadAddr(t *testing.T) {
	if _, err := Reserve("127.0.0.1:notaport"); err == nil {
		t.Fatal("Reserve(127.0.0.1:notaport) succeeded")
	}
}

func TestSocketKeepsNonblocking(t *testing.T) {
	ln, err := reuseport.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := HoldListener(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if a, err := s.Addr(); err != nil || a != ln.Addr().String() {
		t.Errorf("Addr: %q, %v; want %q", a, err, ln.Addr())
	}
	f, err := s.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_ = f.Fd() // what os/exec does with ExtraFiles
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_NONBLOCK == 0 {
		t.Error("the listener's socket turned blocking after Fd on a File of its Socket: accept would block a thread")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.File(); err == nil {
		t.Error("File of a closed Socket succeeded")
	}
}
