package proto

import "time"

// Timing is every deadline of the pool that follows from the two the user
// sets, Options.ShutdownTimeout and Options.HeartbeatTimeout, in one place:
// the supervisor and its workers must agree on them.
type Timing struct {
	// Shutdown is ShutdownTimeout: how long a worker asked to stop may
	// take before the supervisor kills it.
	Shutdown time.Duration
	// Heartbeat is how often a worker reports: every second, and at least
	// four times per HeartbeatTimeout, so that one late beat never looks
	// like a dead worker.
	Heartbeat time.Duration
	// WorkerStop bounds a worker's own stop, in case its supervisor is gone
	// and cannot kill it: a little past Shutdown, so that a live supervisor
	// always acts first.
	WorkerStop time.Duration
	// Orphans is how long the workers of a supervisor that died may still
	// run: they see their lifeline close and then take up to WorkerStop. A
	// steered group refuses to change while they may hold its sockets, and
	// an abandoned binary upgrade is waited for this long.
	Orphans time.Duration
	// Settle bounds the wait for a retired slot's socket to receive nothing
	// more before its worker is asked to stop (migration cbpf): half of
	// Shutdown, so a retirement takes at most 1.5 × Shutdown.
	Settle time.Duration
	// Reap bounds the wait for a standby worker that was told to go.
	Reap time.Duration
	// Linger is how long the supervisor keeps reading a worker's status pipe
	// after the worker exited, in case a grandchild holds its write end.
	Linger time.Duration
}

// NewTiming derives the pool's deadlines from ShutdownTimeout and
// HeartbeatTimeout (both with defaults applied).
func NewTiming(shutdown, heartbeat time.Duration) Timing {
	return Timing{
		Shutdown:   shutdown,
		Heartbeat:  max(min(time.Second, heartbeat/4), time.Millisecond),
		WorkerStop: shutdown + time.Second,
		Orphans:    shutdown + 2*time.Second,
		Settle:     shutdown / 2,
		Reap:       2 * time.Second,
		Linger:     200 * time.Millisecond,
	}
}
