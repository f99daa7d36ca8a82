package supervisor

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// EventKind names a lifecycle event.
type EventKind string

// Lifecycle events, in the order they usually happen to one worker.
const (
	EventSpawn     EventKind = "spawn"      // a worker was forked
	EventReady     EventKind = "ready"      // a worker reported it serves
	EventPoolReady EventKind = "pool-ready" // every slot has a ready worker (once per start and per restart)
	EventDrain     EventKind = "drain"      // a worker's slot leaves the pool: it serves until the slot has drained, then stops
	EventStop      EventKind = "stop"       // a worker was asked to stop gracefully; Reason says why
	EventKill      EventKind = "kill"       // a worker was sent SIGKILL; Reason says why
	EventExit      EventKind = "exit"       // a worker exited; Exit says how, Reason is "" if it was asked to
	EventRefork    EventKind = "refork"     // a slot is forked again after Delay
	EventRefused   EventKind = "refused"    // a request (scale, restart) was refused; Reason says why
	EventRestart   EventKind = "restart"    // a rolling restart began (Reason "begin") or ended ("done", "aborted: …")
	EventStopping  EventKind = "stopping"   // the pool is stopping; Reason is "graceful" or "immediate"
	EventDegraded  EventKind = "degraded"   // MaxStartFailures workers in a row failed to start while others serve: the pool keeps serving and trying; Reason says why
	EventRecovered EventKind = "recovered"  // a worker started again after EventDegraded
	EventUpgrade   EventKind = "upgrade"    // a binary upgrade began ("begin"), or ended ("done", "failed: …"); Pid is the new supervisor's
	EventLameDuck  EventKind = "lame-duck"  // a graceful stop of the pool waits Options.DrainDelay first, the workers serving with Draining true; Reason says why it stops
	EventStuck     EventKind = "stuck"      // a worker's requests made no progress for StuckTimeout: it is replaced; Reason is its report (the requests, where they block, the dump's path)
	EventMemory    EventKind = "memory"     // a worker's RSS stayed above MemoryLimit: it is replaced; Reason says how much
)

// The Reason of an EventStop, EventDrain or EventKill that the pool itself
// decided on: why the worker is stopped. Programs match these (the last
// two as prefixes: the rest of the Reason says more), not prose.
const (
	ReasonRetired      = "retired"            // TTOU or a lower Workers: the slot leaves the pool
	ReasonReplaced     = "replaced"           // its replacement is ready (MaxRequests, a rolling restart)
	ReasonStuck        = "stuck"              // replaced because its requests made no progress
	ReasonMemory       = "memory"             // replaced because its RSS stayed above the limit
	ReasonPoolStopping = "pool stopping"      // the whole pool stops
	ReasonNoHeartbeat  = "no heartbeat"       // killed: silent for longer than HeartbeatTimeout
	ReasonProtocol     = "protocol violation" // killed: it wrote what the protocol does not allow
)

// Event is one lifecycle event. Fields that do not apply to a Kind are zero.
type Event struct {
	Kind   EventKind
	Worker Worker        // the worker concerned, if any
	Exit   Exit          // for EventExit
	Delay  time.Duration // for EventRefork
	Reason string
	Pool   int // for EventPoolReady: the number of workers
	Pid    int // for EventUpgrade, and a refusal because of one: the new supervisor's process ID
}

// ErrKilled is returned by [Supervisor.Run] after [Supervisor.Kill].
var ErrKilled = errors.New("supervisor: workers killed at once on request")

// StartError is returned by [Supervisor.Run] when workers keep exiting before
// they become ready.
type StartError struct {
	Failures int    // consecutive workers that exited before ready
	Reason   string // what the last one reported, or how it exited
}

// Error implements error.
func (e *StartError) Error() string {
	return fmt.Sprintf("supervisor: %d workers in a row exited before becoming ready; last: %s", e.Failures, e.Reason)
}

// StopTimeoutError is returned by [Supervisor.Run] when workers outlived the
// stop timeout and were killed.
type StopTimeoutError struct {
	Timeout time.Duration
	Pids    []int // the workers killed
}

// Error implements error.
func (e *StopTimeoutError) Error() string {
	pids := make([]string, len(e.Pids))
	for i, p := range e.Pids {
		pids[i] = fmt.Sprint(p)
	}
	return fmt.Sprintf("supervisor: %d worker(s) still running after the stop timeout of %v were killed (pid %s)",
		len(e.Pids), e.Timeout, strings.Join(pids, ", "))
}
