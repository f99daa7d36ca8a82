package reuseport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
	"unsafe"

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
	begun, derr := pendingHandshakes(port)
	if derr != nil {
		sleep(50 * time.Millisecond)
		begun = nil
	}
	queued := 0
	for {
		if len(begun) > 0 {
			if now, err := pendingHandshakes(port); err == nil { // on error: ask again
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

// handshake identifies a connection in a SYN queue: family, addresses and
// ports as the kernel reports them.
type handshake struct {
	family byte
	id     [36]byte // sport, dport, src[16], dst[16]
}

// Structures of linux/inet_diag.h.
type inetDiagSockID struct {
	Sport  [2]byte
	Dport  [2]byte
	Src    [16]byte
	Dst    [16]byte
	If     uint32
	Cookie [2]uint32
}

type inetDiagReqV2 struct {
	Family   uint8
	Protocol uint8
	Ext      uint8
	Pad      uint8
	States   uint32
	ID       inetDiagSockID
}

type inetDiagMsg struct {
	Family  uint8
	State   uint8
	Timer   uint8
	Retrans uint8
	ID      inetDiagSockID
	Expires uint32
	Rqueue  uint32
	Wqueue  uint32
	UID     uint32
	Inode   uint32
}

const (
	tcpSynRecv    = 3  // TCP_SYN_RECV: asks for request sockets too
	tcpListen     = 10 // TCP_LISTEN
	tcpNewSynRecv = 12 // TCP_NEW_SYN_RECV: a request socket
)

// pendingHandshakes returns the handshakes to local port that are still in
// a SYN queue (of any listener on the port), for IPv4 and IPv6.
func pendingHandshakes(port int) (map[handshake]bool, error) {
	out := map[handshake]bool{}
	err := sockDiag(port, 1<<tcpSynRecv|1<<tcpNewSynRecv, func(d *inetDiagMsg) {
		if d.State != tcpNewSynRecv && d.State != tcpSynRecv {
			return
		}
		h := handshake{family: d.Family}
		copy(h.id[0:2], d.ID.Sport[:])
		copy(h.id[2:4], d.ID.Dport[:])
		copy(h.id[4:20], d.ID.Src[:])
		copy(h.id[20:36], d.ID.Dst[:])
		out[h] = true
	})
	return out, err
}

// listeners returns the inodes of the TCP sockets listening on ip:port (ip
// as the kernel reports it: 16 bytes, an IPv4 address in its first 4).
func listeners(family uint8, ip [16]byte, port int) ([]uint64, error) {
	var out []uint64
	err := sockDiag(port, 1<<tcpListen, func(d *inetDiagMsg) {
		if d.State == tcpListen && d.Family == family && d.ID.Src == ip {
			out = append(out, uint64(d.Inode))
		}
	})
	return out, err
}

// sockDiag dumps the TCP sockets (IPv4 and IPv6) in the given states whose
// local port is port, calling fn for each.
func sockDiag(port int, states uint32, fn func(*inetDiagMsg)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for try := 0; ; try++ {
			var got []inetDiagMsg
			err := dump(fd, family, port, states, func(d *inetDiagMsg) { got = append(got, *d) })
			if errors.Is(err, errInterrupted) && try < 3 {
				continue // the table changed during the dump: again
			}
			if err != nil {
				return err
			}
			for i := range got {
				fn(&got[i])
			}
			break
		}
	}
	return nil
}

var errInterrupted = errors.New("sock_diag: dump interrupted")

func dump(fd int, family uint8, port int, states uint32, fn func(*inetDiagMsg)) error {
	const hdr = unix.SizeofNlMsghdr
	req := inetDiagReqV2{Family: family, Protocol: unix.IPPROTO_TCP, States: states}
	binary.BigEndian.PutUint16(req.ID.Sport[:], uint16(port)) // the kernel filters on it
	buf := make([]byte, hdr+int(unsafe.Sizeof(req)))
	*(*unix.NlMsghdr)(unsafe.Pointer(&buf[0])) = unix.NlMsghdr{
		Len: uint32(len(buf)), Type: unix.SOCK_DIAG_BY_FAMILY, Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP, Seq: 1,
	}
	*(*inetDiagReqV2)(unsafe.Pointer(&buf[hdr])) = req
	if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	rb := make([]byte, 64<<10)
	interrupted := false
	for {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := parseNetlink(rb[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch m.typ {
			case unix.NLMSG_DONE, unix.NLMSG_ERROR:
				if len(m.data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.data)); e < 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				if interrupted {
					return errInterrupted
				}
				return nil
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(m.data) >= int(unsafe.Sizeof(inetDiagMsg{})) {
					d := *(*inetDiagMsg)(unsafe.Pointer(&m.data[0]))
					if int(binary.BigEndian.Uint16(d.ID.Sport[:])) == port {
						fn(&d)
					}
				}
			}
		}
	}
}

type nlMsg struct {
	typ   uint16
	flags uint16
	data  []byte
}

func parseNetlink(b []byte) ([]nlMsg, error) {
	var out []nlMsg
	for len(b) >= unix.SizeofNlMsghdr {
		h := (*unix.NlMsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return nil, errors.New("sock_diag: malformed netlink message")
		}
		out = append(out, nlMsg{typ: h.Type, flags: h.Flags, data: b[unix.SizeofNlMsghdr:l]})
		b = b[min(len(b), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
	}
	return out, nil
}

// listenersAt returns the inodes of the sockets listening on at's address.
func listenersAt(at *Socket) ([]uint64, error) {
	sa, err := at.sockname()
	if err != nil {
		return nil, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		var ip [16]byte
		copy(ip[:4], a.Addr[:])
		return listeners(unix.AF_INET, ip, a.Port)
	case *unix.SockaddrInet6:
		return listeners(unix.AF_INET6, a.Addr, a.Port)
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
