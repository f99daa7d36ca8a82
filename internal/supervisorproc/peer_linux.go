package supervisorproc

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// peerAllowed reports whether the peer is this user or root.
func peerAllowed(c *net.UnixConn) (int, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, false
	}
	var cred *unix.Ucred
	var cerr error
	rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cerr != nil || cred == nil {
		return -1, false
	}
	return int(cred.Uid), int(cred.Uid) == os.Getuid() || cred.Uid == 0
}

// peerClosed reports whether the peer of the stream socket fd has closed
// its end (not only shut it for writing): poll's POLLHUP, which a Unix
// socket reports only once both directions are shut.
func peerClosed(fd uintptr) bool {
	p := []unix.PollFd{{Fd: int32(fd)}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0 && p[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
}
