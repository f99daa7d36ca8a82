//go:build unix

package signame

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func unixName(s syscall.Signal) string { return unix.SignalName(s) }
