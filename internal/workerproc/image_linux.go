package workerproc

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/clusterflock/clusterflock/internal/proto"
	"golang.org/x/sys/unix"
)

// nameImage gives this worker its supervisor's command name. Executed
// through /proc/self/fd/<ImageFD>, the kernel named it, and every thread
// the runtime has started, after the descriptor ("8"), which ps, top and
// pkill would show and match. Only a process so named is renamed.
func nameImage() {
	self, err := os.ReadFile("/proc/self/comm")
	if err != nil || string(bytes.TrimSpace(self)) != strconv.Itoa(proto.ImageFD) {
		return
	}
	name, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", os.Getppid()))
	if name = bytes.TrimSpace(name); err != nil || len(name) == 0 {
		return
	}
	threads, _ := filepath.Glob("/proc/self/task/*/comm")
	for _, t := range threads {
		_ = os.WriteFile(t, name, 0) // a thread that has just exited is gone
	}
}

// closeImage closes proto.ImageFD, the binary this worker was executed
// from, which only the exec needed; only if it is that (an O_PATH
// descriptor), never another file that happens to have the number.
func closeImage() {
	if fl, err := unix.FcntlInt(proto.ImageFD, unix.F_GETFL, 0); err == nil && fl&unix.O_PATH != 0 {
		unix.Close(proto.ImageFD)
	}
}
