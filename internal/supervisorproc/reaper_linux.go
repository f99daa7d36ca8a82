package supervisorproc

import (
	"os"
	"os/signal"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reapOrphans runs while the supervisor runs as PID 1 (a container without
// an init): processes orphaned below it (a handler's grandchildren) are
// re-parented to it, and it reaps them so they do not stay zombies. It
// reaps only processes that are not in own. It returns when stop is closed.
func reapOrphans(own *children, stop <-chan struct{}) {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGCHLD)
	defer signal.Stop(sigc)
	tick := time.NewTicker(time.Second) // own children may hide others for a moment
	defer tick.Stop()
	for {
		for {
			pid := waitablePid()
			if pid <= 0 || own.has(pid) {
				break
			}
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		select {
		case <-stop:
			return
		case <-sigc:
		case <-tick.C:
		}
	}
}

// waitablePid returns a child that has exited, without reaping it, or 0.
func waitablePid() int {
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
		return 0
	}
	// si_pid is the first field of the union after si_signo, si_errno and
	// si_code, which starts at the union's (pointer) alignment.
	const ptr = unsafe.Sizeof(uintptr(0))
	off := (12 + ptr - 1) &^ (ptr - 1)
	return int(*(*int32)(unsafe.Add(unsafe.Pointer(&info), off)))
}
