//go:build unix

package supervisorproc

import (
	"os"
	"strconv"
	"syscall"
)

// closeStrayOnExecByList marks close-on-exec every descriptor from 3 up
// that dir (/proc/self/fd, /dev/fd) lists.
func closeStrayOnExecByList(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= 3 {
			syscall.CloseOnExec(fd)
		}
	}
}
