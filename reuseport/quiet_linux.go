package reuseport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// WaitQuiet waits, after the socket was steered away from, until it can
// receive no more connections: every handshake to its port that had begun
// by then has finished (the kernel's SYN queues, read with sock_diag; a
// handshake that began before the steering still completes on this socket),
// and its accept queue is empty. It returns after at most limit, and reports
// whether it saw the socket quiet. Without sock_diag it waits a fixed 50 ms
// for the handshakes instead.
func (s *Socket) WaitQuiet(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	// A SYN handled by another CPU while the program was being replaced
	// may still be creating its request socket: let that finish first.
	time.Sleep(min(2*time.Millisecond, limit))
	port, err := s.port()
	if err != nil {
		return false
	}
	begun, err := pendingHandshakes(port)
	if err != nil {
		time.Sleep(min(50*time.Millisecond, time.Until(deadline)))
		begun = nil
	}
	for time.Now().Before(deadline) {
		if len(begun) > 0 {
			now, err := pendingHandshakes(port)
			if err != nil {
				now = nil
			}
			for h := range begun {
				if !now[h] {
					delete(begun, h)
				}
			}
		}
		if len(begun) == 0 {
			if n, err := s.AcceptQueue(); err != nil || n == 0 {
				return err == nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

func (s *Socket) port() (int, error) {
	a, err := s.tcpAddr()
	if err != nil {
		return 0, err
	}
	return a.Port, nil
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
	tcpNewSynRecv = 12 // TCP_NEW_SYN_RECV: a request socket
)

// pendingHandshakes returns the handshakes to local port that are still in
// a SYN queue (of any listener on the port), for IPv4 and IPv6.
func pendingHandshakes(port int) (map[handshake]bool, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	out := map[handshake]bool{}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := dumpSynRecv(fd, family, port, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func dumpSynRecv(fd int, family uint8, port int, out map[handshake]bool) error {
	const hdr = unix.SizeofNlMsghdr
	req := inetDiagReqV2{Family: family, Protocol: unix.IPPROTO_TCP, States: 1<<tcpSynRecv | 1<<tcpNewSynRecv}
	buf := make([]byte, hdr+int(unsafe.Sizeof(req)))
	*(*unix.NlMsghdr)(unsafe.Pointer(&buf[0])) = unix.NlMsghdr{
		Len: uint32(len(buf)), Type: unix.SOCK_DIAG_BY_FAMILY, Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP, Seq: 1,
	}
	*(*inetDiagReqV2)(unsafe.Pointer(&buf[hdr])) = req
	if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	rb := make([]byte, 64<<10)
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
			switch m.typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.data)); e != 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return nil
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(m.data) < int(unsafe.Sizeof(inetDiagMsg{})) {
					continue
				}
				d := *(*inetDiagMsg)(unsafe.Pointer(&m.data[0]))
				if d.State != tcpNewSynRecv && d.State != tcpSynRecv {
					continue
				}
				if int(binary.BigEndian.Uint16(d.ID.Sport[:])) != port {
					continue
				}
				h := handshake{family: d.Family}
				copy(h.id[0:2], d.ID.Sport[:])
				copy(h.id[2:4], d.ID.Dport[:])
				copy(h.id[4:20], d.ID.Src[:])
				copy(h.id[20:36], d.ID.Dst[:])
				out[h] = true
			}
		}
	}
}

type nlMsg struct {
	typ  uint16
	data []byte
}

func parseNetlink(b []byte) ([]nlMsg, error) {
	var out []nlMsg
	for len(b) >= unix.SizeofNlMsghdr {
		h := (*unix.NlMsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return nil, errors.New("sock_diag: malformed netlink message")
		}
		out = append(out, nlMsg{typ: h.Type, data: b[unix.SizeofNlMsghdr:l]})
		b = b[min(len(b), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
	}
	return out, nil
}
