package sockets

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// InUseError is returned by [Reservation.CheckFree] when other sockets
// already listen on the reserved address.
type InUseError struct {
	Addr    string
	Sockets int
	Pids    []int // the processes holding them, where /proc shows them
}

// Error implements error.
func (e *InUseError) Error() string {
	who := "held by a process this user cannot see"
	if len(e.Pids) > 0 {
		ps := make([]string, len(e.Pids))
		for i, p := range e.Pids {
			ps[i] = strconv.Itoa(p)
		}
		who = "held by pid " + strings.Join(ps, ", ")
	}
	return fmt.Sprintf("%d socket(s) already listen on %s (%s): another pool, or another program with SO_REUSEPORT, serves there", e.Sockets, e.Addr, who)
}

// CheckFree returns an *InUseError if sockets already listen on the reserved
// address: with SO_REUSEPORT a second pool would join them and take part of
// their connections. It returns nil if sock_diag cannot tell.
func (r *Reservation) CheckFree() error {
	found, err := sockdiagListeners(r)
	if err != nil || len(found) == 0 {
		return nil
	}
	return &InUseError{Addr: r.addr, Sockets: len(found), Pids: socketOwners(found)}
}

// socketOwners returns the processes that hold a descriptor of one of the
// sockets with inodes inos, as far as /proc lets this user see.
func socketOwners(inos []uint64) []int {
	want := make(map[string]bool, len(inos))
	for _, ino := range inos {
		want[fmt.Sprintf("socket:[%d]", ino)] = true
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, dir := range procs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(dir + "/fd")
		for _, fd := range fds {
			if link, err := os.Readlink(dir + "/fd/" + fd.Name()); err == nil && want[link] {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// sockdiagListeners returns the inodes of the sockets listening on r's
// address.
func sockdiagListeners(r *Reservation) ([]uint64, error) {
	sa, err := unix.Getsockname(r.fd)
	if err != nil {
		return nil, err
	}
	return listenersOn(sa)
}
