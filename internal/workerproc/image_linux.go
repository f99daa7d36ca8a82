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

// nameImage gives this worker the command name of its supervisor (pid
// supervisor, from the marker). Executed through /proc/self/fd/<ImageFD>,
// the kernel named it, and every thread the runtime has started, after the
// descriptor ("8"), which ps, top and pkill would show and match. Only a
// process so named is renamed, and only after its parent: a worker whose
// supervisor is already gone keeps the number rather than take its new
// parent's name.
func nameImage(supervisor int) {
	number := strconv.Itoa(proto.ImageFD)
	if comm("/proc/self/comm") != number {
		return
	}
	name := comm(fmt.Sprintf("/proc/%d/comm", supervisor))
	if name == "" || os.Getppid() != supervisor {
		return
	}
	// A thread started from one not yet renamed copies the old name: go
	// over them again until none is left (a few passes at most).
	for range 4 {
		renamed := false
		threads, _ := filepath.Glob("/proc/self/task/*/comm")
		for _, t := range threads {
			if comm(t) == number {
				_ = os.WriteFile(t, []byte(name), 0) // a thread that has just exited is gone
				renamed = true
			}
		}
		if !renamed {
			return
		}
	}
}

// comm reads a comm file: a task's command name, "" if unreadable.
func comm(path string) string {
	b, _ := os.ReadFile(path)
	return string(bytes.TrimSpace(b))
}

// closeImage closes proto.ImageFD, the binary this worker was executed
// from, which only the exec needed; only if it is that (an O_PATH
// descriptor), never another file that happens to have the number.
func closeImage() {
	if fl, err := unix.FcntlInt(proto.ImageFD, unix.F_GETFL, 0); err == nil && fl&unix.O_PATH != 0 {
		unix.Close(proto.ImageFD)
	}
}
