package sockets

import (
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// Reservation holds a TCP address for a pool: a socket bound to it with
// SO_REUSEPORT that never listens. The kernel sends it no connections, but
// programs without SO_REUSEPORT (or of another user) cannot bind the port
// while it is held, and a port-0 address gets one concrete port that every
// worker then uses.
type Reservation struct {
	fd   int
	addr string
}

// Reserve binds a reservation for addr ("host:port"; port 0 picks a free
// port). The host is kept as given; a wildcard host reserves the IPv6 and IPv4
// wildcard, as Go's listeners use it.
func Reserve(addr string) (*Reservation, error) {
	fd, a, err := bindTCP(addr, false)
	if err != nil {
		return nil, err
	}
	return &Reservation{fd: fd, addr: a}, nil
}

// bindTCP returns a TCP socket (close-on-exec, SO_REUSEPORT, and
// SO_REUSEADDR if reuseAddr) bound to addr but not listening, and the
// address with the host as given and the concrete port. A wildcard host
// binds the IPv6 and IPv4 wildcard, as Go's listeners do.
func bindTCP(addr string, reuseAddr bool) (int, string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return -1, "", err
	}
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return -1, "", err
	}
	var fd int
	var sa unix.Sockaddr
	switch ip4 := ta.IP.To4(); {
	case ta.IP == nil || ta.IP.IsUnspecified():
		fd, err = socket(unix.AF_INET6)
		if err == nil {
			if err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
				unix.Close(fd)
				return -1, "", fmt.Errorf("setsockopt IPV6_V6ONLY: %w", err)
			}
			sa = &unix.SockaddrInet6{Port: ta.Port}
		} else { // no IPv6 on this host
			fd, err = socket(unix.AF_INET)
			sa = &unix.SockaddrInet4{Port: ta.Port}
		}
	case ip4 != nil:
		fd, err = socket(unix.AF_INET)
		sa = &unix.SockaddrInet4{Port: ta.Port, Addr: [4]byte(ip4)}
	default:
		fd, err = socket(unix.AF_INET6)
		s6 := &unix.SockaddrInet6{Port: ta.Port, Addr: [16]byte(ta.IP.To16())}
		if ta.Zone != "" {
			if ifi, e := net.InterfaceByName(ta.Zone); e == nil {
				s6.ZoneId = uint32(ifi.Index)
			} else if n, e := strconv.ParseUint(ta.Zone, 10, 32); e == nil {
				s6.ZoneId = uint32(n)
			} else {
				return -1, "", fmt.Errorf("zone %q of %s: %w", ta.Zone, addr, e)
			}
		}
		sa = s6
	}
	if err != nil {
		return -1, "", err
	}
	if reuseAddr {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			unix.Close(fd)
			return -1, "", fmt.Errorf("setsockopt SO_REUSEADDR: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, "", &net.OpError{Op: "listen", Net: "tcp", Addr: ta, Err: fmt.Errorf("bind: %w", err)}
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("getsockname: %w", err)
	}
	port := 0
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	return fd, net.JoinHostPort(host, strconv.Itoa(port)), nil
}

func socket(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	// SO_REUSEPORT only: without SO_REUSEADDR on this socket, a plain
	// listener (Go sets SO_REUSEADDR) conflicts with it even though it never
	// listens.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("setsockopt SO_REUSEPORT: %w", err)
	}
	return fd, nil
}

// Addr returns the reserved address: the host as given, the concrete port.
func (r *Reservation) Addr() string { return r.addr }

// Close releases the reservation.
func (r *Reservation) Close() error { return unix.Close(r.fd) }
