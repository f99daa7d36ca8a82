package supervisorproc

import "golang.org/x/sys/unix"

// closeStrayOnExec marks every descriptor from 3 up close-on-exec, so that
// a descriptor the program inherited without it (from whatever started it)
// does not pass on into every worker: a worker receives exactly what the
// pool gives it. The pool's own descriptors are close-on-exec already and
// reach a child only through os/exec's ExtraFiles.
func closeStrayOnExec() {
	if unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	closeStrayOnExecByList("/proc/self/fd") // kernels before 5.11
}
