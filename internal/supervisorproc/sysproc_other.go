//go:build unix && !linux

package supervisorproc

import "syscall"

// workerSysProcAttr: no parent-death signal off Linux; the lifeline pipe
// alone stops orphaned workers.
func workerSysProcAttr() *syscall.SysProcAttr { return nil }
