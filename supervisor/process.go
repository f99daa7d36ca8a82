package supervisor

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
)

// Process is a started worker process, as the supervisor sees it. Production
// code wraps os/exec; tests use fakes they drive.
type Process interface {
	// Pid returns the operating-system process ID.
	Pid() int
	// Signal sends sig to the process. Signalling a process that has exited
	// is not an error the supervisor acts on.
	Signal(sig os.Signal) error
	// Messages delivers what the worker reports, in order. It is closed when
	// the worker can report no more (it exited, or closed its end).
	Messages() <-chan proto.Message
	// Wait blocks until the process has exited and been reaped, and returns
	// how it ended. It is called once, after Messages is closed.
	Wait() Exit
}

// Spawner starts worker processes.
type Spawner interface {
	// Spawn starts the process for w (its Slot and Generation are set; Pid
	// and Started are not). It returns once the process runs.
	Spawn(w Worker) (Process, error)
}

// SlotReleaser is implemented by a Spawner that holds something per slot
// (clusterflock: the slot's listening socket). The supervisor calls Release
// when a slot leaves the pool (a retirement nobody replaces), before it asks
// that slot's worker, if any, to stop; a later Spawn for the same slot number
// takes it back.
type SlotReleaser interface {
	Release(slot int)
}

// SpawnerFunc adapts a function to [Spawner].
type SpawnerFunc func(w Worker) (Process, error)

// Spawn calls f(w).
func (f SpawnerFunc) Spawn(w Worker) (Process, error) { return f(w) }

// Exit says how a process ended: with a Code, or killed by a Signal.
type Exit struct {
	Code   int            // exit code; -1 if killed by a signal
	Signal syscall.Signal // the signal that killed it, or 0
}

// String returns "exit status N" or "killed by signal NAME".
func (e Exit) String() string {
	if e.Signal != 0 {
		return "killed by signal " + signalName(e.Signal)
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// State is where a worker is in its life.
type State string

// Worker states.
const (
	Starting State = "starting" // forked, not yet ready
	Ready    State = "ready"    // serving
	Stopping State = "stopping" // asked to stop; draining
)

// Worker describes one worker process.
type Worker struct {
	ID         int       // 1, 2, …: fork order over the supervisor's life
	Slot       int       // position in the pool, 0 … Workers-1; reused by a refork
	Generation int       // 0, then +1 per rolling restart
	Pid        int       // operating-system process ID
	Started    time.Time // when it was forked
	State      State
}

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGKILL:
		return "KILL"
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGINT:
		return "INT"
	case syscall.SIGQUIT:
		return "QUIT"
	case syscall.SIGSEGV:
		return "SEGV"
	case syscall.SIGABRT:
		return "ABRT"
	case syscall.SIGHUP:
		return "HUP"
	}
	return s.String()
}
