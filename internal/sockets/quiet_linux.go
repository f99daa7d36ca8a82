package sockets

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/clusterflock/clusterflock/internal/sockdiag"
	"golang.org/x/sys/unix"
)

// ErrNotQuiet is returned by [Socket.WaitQuiet] when its limit passed first.
var ErrNotQuiet = errors.New("reuseport: the socket still receives connections")

// WaitQuiet waits, after the socket was steered away from, until it can
// receive no more connections: every handshake to its port that had begun
// by then has finished (the kernel's SYN queues, read with sock_diag; a
// handshake that began before the steering still completes on this socket),
// and its accept queue is empty. It returns nil then, [ErrNotQuiet] (with
// what was pending) when limit passes first or stop is closed, or the
// socket's error. Without sock_diag it waits a fixed 50 ms for the
// handshakes instead.
func (s *Socket) WaitQuiet(limit time.Duration, stop <-chan struct{}) error {
	deadline := time.Now().Add(limit)
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(min(d, time.Until(deadline)))
		defer t.Stop()
		select {
		case <-t.C:
			return time.Now().Before(deadline)
		case <-stop:
			return false
		}
	}
	// A SYN handled by another CPU while the program was being replaced
	// may still be creating its request socket: let that finish first.
	sleep(2 * time.Millisecond)
	port, err := s.port()
	if err != nil {
		return err
	}
	begun, derr := sockdiag.PendingHandshakes(port)
	if derr != nil {
		sleep(50 * time.Millisecond)
		begun = nil
	}
	queued := 0
	for {
		if len(begun) > 0 {
			if now, err := sockdiag.PendingHandshakes(port); err == nil { // on error: ask again
				for h := range begun {
					if !now[h] {
						delete(begun, h)
					}
				}
			}
		}
		if len(begun) == 0 {
			if queued, err = s.AcceptQueue(); err != nil || queued == 0 {
				return err
			}
		}
		if !sleep(time.Millisecond) {
			return fmt.Errorf("%w: %d handshakes pending, %d connections queued", ErrNotQuiet, len(begun), queued)
		}
	}
}

func (s *Socket) port() (int, error) {
	a, err := s.tcpAddr()
	if err != nil {
		return 0, err
	}
	return a.Port, nil
}

// inode returns the socket's inode number, as sock_diag reports it (also
// after Close).
func (s *Socket) inode() (uint64, error) {
	if s.ino == 0 {
		return 0, errors.New("reuseport: the socket's inode is unknown")
	}
	return s.ino, nil
}

// listenersAt returns the inodes of the sockets listening on at's address.
func listenersAt(at *Socket) ([]uint64, error) {
	sa, err := at.sockname()
	if err != nil {
		return nil, err
	}
	return listenersOn(sa)
}

// listenersOn returns the inodes of the sockets listening on sa.
func listenersOn(sa unix.Sockaddr) ([]uint64, error) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		var ip [16]byte
		copy(ip[:4], a.Addr[:])
		return sockdiag.Listeners(unix.AF_INET, ip, a.Port)
	case *unix.SockaddrInet6:
		return sockdiag.Listeners(unix.AF_INET6, a.Addr, a.Port)
	}
	return nil, fmt.Errorf("reuseport: not a TCP socket (%T)", sa)
}

// stillListens reports whether s (closed here) still listens on at's
// address, held by another process; false if sock_diag cannot tell.
func stillListens(at, s *Socket) bool {
	found, err := listenersAt(at)
	return err == nil && s.ino != 0 && slices.Contains(found, s.ino)
}

// sameSockets reports whether the sockets listening on at's address are
// exactly socks (compared by inode), and if not, how many others there are;
// ok is true when sock_diag cannot tell.
func sameSockets(at *Socket, socks []*Socket) (ok bool, others int, err error) {
	found, err := listenersAt(at)
	if errors.Is(err, errClosed) {
		return false, 0, err
	}
	if err != nil {
		return true, 0, nil // cannot tell
	}
	var ours []uint64
	for _, s := range socks {
		ino, err := s.inode()
		if err != nil {
			return false, 0, err
		}
		ours = append(ours, ino)
	}
	for _, ino := range found {
		if !slices.Contains(ours, ino) {
			others++
		}
	}
	return others == 0 && len(found) == len(ours), others, nil
}
