package workerproc

import "syscall"

// recvFlags makes a received descriptor close-on-exec as it arrives.
const recvFlags = syscall.MSG_CMSG_CLOEXEC
