//go:build unix && !linux

package supervisorproc

// closeStrayOnExec marks every descriptor from 3 up close-on-exec (see the
// Linux version).
func closeStrayOnExec() { closeStrayOnExecByList("/dev/fd") }
