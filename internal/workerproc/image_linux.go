package workerproc

import (
	"github.com/clusterflock/clusterflock/internal/proto"
	"golang.org/x/sys/unix"
)

// closeImage closes proto.ImageFD, the binary this worker was executed
// from, which only the exec needed; only if it is that (an O_PATH
// descriptor), never another file that happens to have the number.
func closeImage() {
	if fl, err := unix.FcntlInt(proto.ImageFD, unix.F_GETFL, 0); err == nil && fl&unix.O_PATH != 0 {
		unix.Close(proto.ImageFD)
	}
}
