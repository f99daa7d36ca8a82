//go:build unix

package workerproc

import (
	"os"
	"sync"
	"syscall"

	"github.com/clusterflock/clusterflock/internal/proto"
)

// init marks the descriptors a worker inherits close-on-exec before any of
// the program's code runs, so that a process the program starts before Run
// does not hold the pool's sockets or pipes (a listening socket held
// elsewhere would also stay in the pool's group). Only a marker naming this
// process's parent counts.
func init() {
	if env, ok, err := proto.LookupWorker(); ok && err == nil {
		for fd := proto.StatusFD; fd <= proto.StderrFD; fd++ {
			syscall.CloseOnExec(fd)
		}
		nameImage(env.SupervisorPID)
		closeImage()
		if os.Getenv(proto.EnvMetrics) == "1" {
			syscall.CloseOnExec(proto.MetricsFD)
		}
	}
}

// statusWriter writes messages to the supervisor, one at a time.
type statusWriter struct {
	mu          sync.Mutex
	f           *os.File
	readsClosed bool // the supervisor reads proto.Closed (proto.EnvClosed)
}

func (s *statusWriter) send(m proto.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = proto.Write(s.f, m) // a write error means the supervisor is gone: the lifeline says so
}
