package supervisorproc

import (
	"fmt"
	"os"

	"github.com/clusterflock/clusterflock/internal/proto"
	"golang.org/x/sys/unix"
)

// images pins the binary each generation of workers runs. Generation 0 runs
// the supervisor's own image (/proc/self/exe: it survives the file's
// deletion, as when `go run` exits or a deploy replaces it); each rolling
// restart's generation opens the binary on disk at its first spawn, so HUP
// picks up a new build and every re-fork of a generation runs its code. A
// generation whose binary cannot be opened fails that first spawn (the
// rolling restart aborts and says why); later spawns of it run the newest
// image that was pinned.
type images struct {
	path string // the binary on disk
	fd   int    // the newest pinned image, a high descriptor (O_PATH)
	gen  int    // its generation
	miss int    // the newest generation whose binary could not be opened, or -1
}

// pinFD is the lowest descriptor an image is kept at in the supervisor. A
// child gets it as proto.ImageFD (an ExtraFiles entry) and is executed from
// /proc/self/fd/<ImageFD>: exec'ing the supervisor's own number failed now
// and then (EACCES), because Go's fork moves descriptors up from the
// highest one handed to the child and could overwrite it first.
const pinFD = 100

func newImages(path string) (*images, error) {
	fd, err := pin("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("clusterflock: cannot pin this program's binary: %w", err)
	}
	return &images{path: path, fd: fd, miss: -1}, nil
}

func pin(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fd)
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, pinFD)
}

// pathFor returns the path a worker of generation gen is executed from and
// the file to pass it as proto.ImageFD (the caller closes it once the child
// has started). Called on the supervisor's goroutine only.
func (im *images) pathFor(gen int) (string, *os.File, error) {
	if gen > im.gen && gen > im.miss {
		fd, err := pin(im.path)
		if err != nil {
			im.miss = gen
			return "", nil, fmt.Errorf("the binary on disk for generation %d: %w", gen, err)
		}
		unix.Close(im.fd)
		im.fd, im.gen = fd, gen
	}
	dup, err := unix.FcntlInt(uintptr(im.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return im.path, nil, nil
	}
	return fmt.Sprintf("/proc/self/fd/%d", proto.ImageFD), os.NewFile(uintptr(dup), "clusterflock-image"), nil
}

func (im *images) close() { unix.Close(im.fd) }
