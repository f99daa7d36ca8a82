// Package clusterflock serves an http.Handler, or any server that accepts on a
// net.Listener, from a pool of worker processes.
//
// [Run] (HTTP) or [Serve] (anything else) called in a program's main makes the
// first process a supervisor. The supervisor re-executes the program's own
// binary once per worker; in each worker the same call opens the worker's own
// SO_REUSEPORT listener on the pool's address and serves, and the kernel
// balances new connections across the workers. The supervisor tracks every
// worker's PID, slot, generation and state, re-forks workers that die without
// being asked to, and turns signals into pool actions:
//
//	TTIN       fork one more worker
//	TTOU       retire the oldest worker gracefully (never below one)
//	TERM, QUIT graceful stop: stop accepting, finish in-flight requests, exit
//	INT        immediate stop: every worker killed at once (graceful when the
//	           program's context ends with it: signal.NotifyContext)
//	HUP        rolling restart: replace every worker, new before old
//	USR2       binary upgrade: start a new supervisor, then drain this one
//	USR1       log the worker table
//
// A worker that dies is re-forked at once (with backoff while workers die
// young); with Options.Spare a standby worker, initialised but not yet
// listening, takes its slot and only has to open its listener.
//
// Retiring a worker loses no request that reached the port: the worker stops
// accepting, connections still queued on its listener reach the other
// workers (see [Migration]: the kernel migrates them, or, without privilege,
// the supervisor holds each slot's socket and steers new connections away
// from a slot before it closes), the worker answers every connection it
// accepted, closes idle keep-alive connections and exits.
//
// # Notes
//
//   - Workers share no memory: each is a separate process with its own heap,
//     caches and connection pools. Code before Run runs in the supervisor
//     and in every worker: open per-worker resources (database pools,
//     caches) behind [IsWorker]. [WorkerFromContext] tells which worker a
//     request is in.
//   - The program's own signal.NotifyContext(ctx, os.Interrupt,
//     syscall.SIGTERM) works as it reads: Ctrl-C and TERM are one graceful
//     stop (a second Ctrl-C stops at once), and a worker does not stop on
//     its own when the signal reaches it too. The README's "Usage" has a
//     complete main.
//   - Beyond the heartbeat: Options.StuckTimeout replaces a worker whose
//     requests make no progress, naming them from a goroutine dump;
//     Options.MemoryLimit recycles a worker that stays above its memory
//     budget; Options.DrainDelay gives load balancers a lame-duck period
//     ([Draining]) before a graceful stop; Options.Metrics serves one
//     merged /metrics (package metrics).
//   - Every socket in a SO_REUSEPORT group must belong to the same user, so
//     the supervisor and all workers run as one user. While the pool runs the
//     supervisor holds the port with a bound, non-listening socket, so another
//     program cannot take it between re-forks.
//   - Balancing is per connection, by a hash of the connection's addresses: a
//     keep-alive client stays on one worker for the connection's life.
//   - Off Linux (macOS, BSDs), SO_REUSEPORT does not balance: the supervisor
//     opens one listener that every worker inherits, and says so in the log.
//     On a system without POSIX processes (Windows) Run returns an error.
//   - Under systemd use Type=notify (the supervisor sends READY=1, RELOADING=1,
//     STOPPING=1, STATUS=, MAINPID= and WATCHDOG=1), ExecReload=kill -HUP, and
//     KillMode=mixed or control-group: a TERM that reaches every process of the
//     pool still drains in-flight requests. Socket activation (LISTEN_FDS) is a
//     listener source: the workers then share systemd's socket. See
//     examples/systemd.
//   - Package [github.com/clusterflock/clusterflock/supervisor] holds the pool's
//     logic, independent of processes and HTTP, for programs that start
//     workers their own way; this package wires it to re-executed workers.
//   - In a container the supervisor may be PID 1: it forwards signals and reaps
//     orphaned grandchildren. Under Kubernetes set terminationGracePeriodSeconds
//     above ShutdownTimeout, and use a preStop sleep of a few seconds so the
//     endpoint is removed before the pool stops accepting.
package clusterflock
