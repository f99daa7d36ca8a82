package sdnotify

import (
	"fmt"
	"strconv"
)

// The socket-activation variables (sd_listen_fds(3)): systemd passes
// listening sockets from fd 3 on, and names the process they are for.
const (
	EnvListenPID     = "LISTEN_PID"     // the pid the sockets are for
	EnvListenFDs     = "LISTEN_FDS"     // how many sockets, from fd 3 on
	EnvListenFDNames = "LISTEN_FDNAMES" // their names, colon-separated
)

// ListenFDs decides what the socket-activation variables mean for the
// process whose pid is self, given the values of LISTEN_PID (pid) and
// LISTEN_FDS (fds); it reads no environment.
//
// The sockets are for this process (active) only if pid is exactly the
// decimal form of self, a positive number: an empty, signed, zero-padded,
// space-padded or otherwise different LISTEN_PID is simply not for us (a
// parent's variables leaked into its child), and fds is then not looked at.
// When they are for us, fds must be exactly "1", as the pool serves one
// socket; otherwise err says so, naming the value.
func ListenFDs(pid, fds string, self int) (active bool, err error) {
	if self <= 0 || pid != strconv.Itoa(self) {
		return false, nil
	}
	if fds != "1" {
		return true, fmt.Errorf("%s=%q: the pool serves exactly one socket", EnvListenFDs, fds)
	}
	return true, nil
}
