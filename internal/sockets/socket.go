//go:build unix

package sockets

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Socket is a listening socket this process holds for its children as a
// bare file descriptor. Unlike an *os.File or a net.Listener it is not
// registered with the Go runtime's poller, so the connections that arrive
// for the children do not wake this process (an *os.File of a non-blocking
// socket is registered: a supervisor holding its workers' sockets that way
// spent 12 % of a core under 10,000 connections/s), and passing it to a
// child never switches the socket, which the child shares, to blocking mode
// (as os/exec does with the *os.File from (*net.TCPListener).File).
type Socket struct {
	mu  sync.Mutex
	fd  int    // -1 once closed
	ino uint64 // the socket's inode, to recognise it in sock_diag after Close
}

// newSocket takes over fd.
func newSocket(fd int) *Socket {
	s := &Socket{fd: fd}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil {
		s.ino = st.Ino
	}
	return s
}

// Adopt takes over f, a socket (f is closed), and returns it as a Socket.
func Adopt(f *os.File) (*Socket, error) {
	defer f.Close()
	return holdConn(f)
}

// HoldListener returns a Socket for a duplicate of ln's socket; ln stays
// open and the caller still closes it.
func HoldListener(ln net.Listener) (*Socket, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("reuseport: %T has no file descriptor", ln)
	}
	return holdConn(sc)
}

func holdConn(sc syscall.Conn) (*Socket, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = dupCloexec(int(fd)) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("reuseport: dup: %w", derr)
	}
	return newSocket(nfd), nil
}

func dupCloexec(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }

var errClosed = errors.New("reuseport: socket closed")

// File returns a new close-on-exec duplicate of the socket as an *os.File,
// to pass to a child process (os/exec's ExtraFiles) or to open a listener on.
// The caller closes it once the child has started.
func (s *Socket) File() (*os.File, error) {
	var nfd int
	err := s.control(func(fd int) (err error) {
		nfd, err = dupCloexec(fd)
		return err
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), "reuseport-socket"), nil
}

// Addr returns the socket's local address ("host:port").
func (s *Socket) Addr() (string, error) {
	a, err := s.tcpAddr()
	if err != nil {
		return "", err
	}
	return a.String(), nil
}

func (s *Socket) tcpAddr() (*net.TCPAddr, error) {
	sa, err := s.sockname()
	if err != nil {
		return nil, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
	case *unix.SockaddrInet6:
		zone := ""
		if a.ZoneId != 0 {
			zone = strconv.Itoa(int(a.ZoneId))
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				zone = ifi.Name
			}
		}
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port, Zone: zone}, nil
	}
	return nil, fmt.Errorf("reuseport: not a TCP socket (%T)", sa)
}

func (s *Socket) sockname() (sa unix.Sockaddr, err error) {
	err = s.control(func(fd int) (err error) {
		sa, err = unix.Getsockname(fd)
		return err
	})
	return sa, err
}

// Close closes the socket.
func (s *Socket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return errClosed
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// control runs fn with the descriptor, which stays open meanwhile.
func (s *Socket) control(fn func(fd int) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return errClosed
	}
	return fn(s.fd)
}
