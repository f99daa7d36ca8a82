package supervisor

import (
	"fmt"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/signame"
)

// Process is a started worker process, as the supervisor sees it. Production
// code wraps os/exec; tests use fakes they drive.
type Process interface {
	// Pid returns the operating-system process ID.
	Pid() int
	// Stop asks the process to stop gracefully: finish its work and exit
	// (for a Unix process, SIGTERM). Stopping a process that has exited is
	// not an error the supervisor acts on.
	Stop() error
	// Kill ends the process at once (SIGKILL).
	Kill() error
	// Messages delivers what the worker reports, in order. It is closed when
	// the worker can report no more (it exited, or closed its end).
	Messages() <-chan Message
	// Wait blocks until the process has exited and been reaped, and returns
	// how it ended. It is called once, after Messages is closed.
	Wait() Exit
}

// MessageKind is the kind of a [Message].
type MessageKind string

// Message kinds.
const (
	MessageReady     MessageKind = "ready"     // the worker serves
	MessageHeartbeat MessageKind = "heartbeat" // the worker is alive
	MessageFailed    MessageKind = "failed"    // the worker cannot serve; Text says why
	MessageRetiring  MessageKind = "retiring"  // the worker asks to be replaced; Text says why
	MessageStuck     MessageKind = "stuck"     // the worker's requests make no progress: replace it; Text is its report
	MessageMemory    MessageKind = "memory"    // the worker's memory stays above its limit: replace it; Text says how much
	// MessageClosed: the worker has closed its listener (it was asked to
	// stop): the next worker waiting its turn to stop may be asked to (see
	// [Supervisor.StopInTurn]).
	MessageClosed MessageKind = "closed"
	// MessageInvalid: what the worker sent breaks the protocol (Text says
	// how); the supervisor kills and replaces it. A Process sends nothing
	// after it.
	MessageInvalid MessageKind = "invalid"
)

// Message is one report of a worker to its supervisor.
type Message struct {
	Kind MessageKind
	Text string
	// Served and InFlight are, in a MessageHeartbeat of a worker that
	// counts them, the requests it has answered and is answering.
	Served, InFlight int64
}

// Spawner starts worker processes.
type Spawner interface {
	// Spawn starts the process for w (its ID, Slot and Generation are set;
	// Pid and Started are not). It returns once the process runs.
	Spawn(w Worker) (Process, error)
}

// SpawnerFunc adapts a function to [Spawner].
type SpawnerFunc func(w Worker) (Process, error)

// Spawn calls f(w).
func (f SpawnerFunc) Spawn(w Worker) (Process, error) { return f(w) }

// Hooks is told what the pool does by a program that keeps state beside it
// (clusterflock: each slot's listening socket, systemd's status, a binary
// upgrade's handshake). Its methods are called on the goroutine running
// [Supervisor.Run], in the order things happen, before the matching
// [Event] is logged and passed to Config.OnEvent. They must return promptly
// (a short system call is fine; waiting on another process is not) and must
// not call the Supervisor's methods.
type Hooks interface {
	// WorkerReady: w reported ready and serves.
	WorkerReady(w Worker)
	// WorkerStopping: w is about to be asked to stop, or to be killed: it
	// takes no new work from now on.
	WorkerStopping(w Worker)
	// WorkerExited: w's process has exited and been reaped.
	WorkerExited(w Worker)
	// SlotLeaving: slot leaves the pool (a retirement nobody replaces). Its
	// worker, if any, is [Draining] until the returned channel is closed,
	// and only then asked to stop (nil: at once). A later Spawn for the same
	// slot number takes the slot back.
	SlotLeaving(slot int) <-chan struct{}
	// PoolReady: every slot has a ready worker; n is their number.
	PoolReady(n int)
	// Restart: a rolling restart began ("begin") or ended ("done" or
	// "aborted: …"), as [EventRestart]'s Reason.
	Restart(phase string)
	// PoolStopping: the pool begins to stop, before any worker is asked to;
	// reason is [EventStopping]'s.
	PoolStopping(reason string)
}

// Exit says how a process ended: with a Code, or killed by a Signal.
type Exit struct {
	Code   int            // exit code; -1 if killed by a signal
	Signal syscall.Signal // the signal that killed it, or 0
	// Stderr is the last line the worker wrote to stderr, if it died before
	// it was ready and the Process kept it (clusterflock's does); else "".
	Stderr string
}

// String returns "exit status N" or "killed by signal NAME".
func (e Exit) String() string {
	if e.Signal != 0 {
		return "killed by signal " + signame.Of(e.Signal)
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// State is where a worker is in its life.
type State string

// Worker states.
const (
	Starting State = "starting" // forked, not yet ready
	Ready    State = "ready"    // serving
	Draining State = "draining" // its slot leaves the pool; serving until drained, then asked to stop
	Stopping State = "stopping" // asked to stop; finishing its work
)

// Worker describes one worker process.
type Worker struct {
	ID         int       // 1, 2, …: fork order over the supervisor's life
	Slot       int       // position in the pool, 0 … Workers-1; reused by a refork
	Generation int       // 0, then +1 per rolling restart
	Pid        int       // operating-system process ID
	Started    time.Time // when it was forked
	State      State
	LastSeen   time.Time // its last message (ready, heartbeat, …); set by Supervisor.Snapshot
	// Served and InFlight are what its last heartbeat said of its requests
	// (0 if it does not count them); set by Supervisor.Snapshot.
	Served, InFlight int64
}

// leaving reports whether w is on its way out (draining or stopping).
func (w Worker) leaving() bool { return w.State == Draining || w.State == Stopping }
