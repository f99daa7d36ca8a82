//go:build unix && !linux

package clusterflock

import "syscall"

// workerSysProcAttr: no parent-death signal off Linux; the lifeline pipe
// alone stops orphaned workers.
func workerSysProcAttr() *syscall.SysProcAttr { return nil }

// recvFlags: no MSG_CMSG_CLOEXEC here; close-on-exec is set right after.
const recvFlags = 0
