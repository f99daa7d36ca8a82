// Package sockdiag is a small client of the kernel's sock_diag netlink
// interface (NETLINK_SOCK_DIAG, linux/inet_diag.h), unprivileged: which TCP
// sockets listen on a port, and which handshakes to a port are still in a
// SYN queue.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Handshake identifies a connection in a SYN queue: family, addresses and
// ports as the kernel reports them.
type Handshake struct {
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

// PendingHandshakes returns the handshakes to local port that are still in
// a SYN queue (of any listener on the port), for IPv4 and IPv6.
func PendingHandshakes(port int) (map[Handshake]bool, error) {
	out := map[Handshake]bool{}
	err := sockDiag(port, 1<<tcpSynRecv|1<<tcpNewSynRecv, func(d *inetDiagMsg) {
		if d.State != tcpNewSynRecv && d.State != tcpSynRecv {
			return
		}
		h := Handshake{family: d.Family}
		copy(h.id[0:2], d.ID.Sport[:])
		copy(h.id[2:4], d.ID.Dport[:])
		copy(h.id[4:20], d.ID.Src[:])
		copy(h.id[20:36], d.ID.Dst[:])
		out[h] = true
	})
	return out, err
}

// Listeners returns the inodes of the TCP sockets listening on ip:port (ip
// as the kernel reports it: 16 bytes, an IPv4 address in its first 4).
func Listeners(family uint8, ip [16]byte, port int) ([]uint64, error) {
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

// Queue is one listening socket's accept queue.
type Queue struct {
	Len, Max int // connections waiting to be accepted; its backlog
}

// ListenQueues returns the accept queues of the TCP sockets listening on
// local port (IPv4 and IPv6).
func ListenQueues(port int) ([]Queue, error) {
	var out []Queue
	err := sockDiag(port, 1<<tcpListen, func(d *inetDiagMsg) {
		if d.State == tcpListen {
			out = append(out, Queue{Len: int(d.Rqueue), Max: int(d.Wqueue)})
		}
	})
	return out, err
}
