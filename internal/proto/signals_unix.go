//go:build unix

package proto

import (
	"os"
	"syscall"
)

// Signals returns the signals a supervisor acts on. Workers subscribe to the
// same set and act only on TERM and QUIT, so a signal sent to the whole
// process group has the effect it has on the supervisor alone (and TTIN and
// TTOU do not stop a worker, their default action).
func Signals() []os.Signal {
	return []os.Signal{
		syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGINT,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2,
	}
}
