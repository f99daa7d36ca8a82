package supervisorproc

import "syscall"

// workerSysProcAttr: a backup for the lifeline. Pdeathsig fires when the
// forking thread exits, which is not always the supervisor's death, so it
// asks for a graceful stop, never a kill.
func workerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
