//go:build unix && !linux

package workerproc

// recvFlags: no MSG_CMSG_CLOEXEC here; close-on-exec is set right after.
const recvFlags = 0
