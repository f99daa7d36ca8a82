// Package clusterflock serves an http.Handler (or, later, any TCP server)
// from a pool of worker processes on Linux.
//
// [Run] called in a program's main makes the first process a supervisor. The
// supervisor re-executes the program's own binary once per worker; in each
// worker the same call to Run opens the worker's own SO_REUSEPORT listener on
// the pool's address and serves the handler, and the kernel balances new
// connections across the workers. The supervisor tracks every worker's PID,
// slot and state, re-forks workers that die without being asked to, and
// turns signals into pool actions:
//
//	TTIN       fork one more worker
//	TTOU       retire the oldest worker gracefully (never below one)
//	TERM, QUIT graceful stop: stop accepting, finish in-flight requests, exit
//	INT        immediate stop: every worker killed at once
//	HUP        rolling restart: replace every worker, new before old
//
// # Notes
//
//   - Workers share no memory: each is a separate process with its own heap,
//     caches and connection pools. Code before Run runs in every worker.
//   - Every socket in a SO_REUSEPORT group must belong to the same user, so
//     the supervisor and all workers run as one user. While the pool runs the
//     supervisor holds the port with a bound, non-listening socket, so another
//     program cannot take it between re-forks.
//   - Balancing is per connection, by a hash of the connection's addresses: a
//     keep-alive client stays on one worker for the connection's life.
//   - Linux only for now: on another OS Run returns an error before starting
//     anything.
//   - Under systemd use KillMode=mixed or control-group with the default
//     SIGTERM: a TERM that reaches every process of the pool still drains
//     in-flight requests. Under Kubernetes set terminationGracePeriodSeconds
//     above ShutdownTimeout.
package clusterflock
