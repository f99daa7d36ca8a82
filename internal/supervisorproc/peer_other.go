//go:build unix && !linux

package supervisorproc

import "net"

// peerAllowed: off Linux the peer's credentials are not read; the socket's
// mode (0600) in a 0700 directory of the user's is the check.
func peerAllowed(c *net.UnixConn) (int, bool) { return -1, true }

// peerClosed: off Linux a peer that closes after shutting its side for
// writing is not told from one that only shut it; the client counts as gone
// once a reply cannot be written.
func peerClosed(fd uintptr) bool { return false }
