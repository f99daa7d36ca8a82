// Package plug is the seam between the pool and package metrics. The root
// package and the supervisor and worker processes see the exporter only
// through these interfaces, which name no metrics library: a program that
// does not import package metrics links none.
package plug

import (
	"log/slog"
	"net/http"
	"os"

	"github.com/clusterflock/clusterflock/supervisor"
)

// Exporter is what Options.Metrics holds (*metrics.Exporter). Its methods
// are called once per process, in the role that process has.
type Exporter interface {
	// Supervisor starts the exporter in the supervisor, before any worker
	// is forked: a bad or taken address is its error.
	Supervisor(cfg SupervisorConfig) (Supervisor, error)
	// Worker starts the exporter in a worker; ch is the worker's end of
	// its metrics channel to the supervisor (proto.MetricsFD).
	Worker(cfg WorkerConfig, ch *os.File) (Worker, error)
}

// SupervisorConfig is what the supervisor gives the exporter.
type SupervisorConfig struct {
	Logger *slog.Logger
	// Handover, if not nil, is the channel from the old supervisor of a
	// binary upgrade: it brings that supervisor's totals and its metrics
	// listener when it exits. Until then the old supervisor serves.
	Handover *os.File
	// Pool returns the pool's state (supervisor.Snapshot), or the zero
	// Snapshot once the pool has stopped.
	Pool func() supervisor.Snapshot
	// Queues returns the accept queues of the pool's listening sockets.
	Queues func() ([]Queue, error)
}

// Queue is one listening socket's accept queue.
type Queue struct {
	Len, Max int // connections waiting to be accepted; the backlog
}

// Supervisor is the exporter's supervisor side.
type Supervisor interface {
	// Attach starts gathering the metrics of worker pid over ch, the
	// supervisor's end of its channel; it owns ch from now on. When ch
	// reaches EOF (the worker is gone), the worker's last totals are kept.
	Attach(pid int, ch *os.File)
	// Event counts a pool event (exits by reason, reloads, upgrades, …).
	Event(ev supervisor.Event)
	// HandOver gives this supervisor's totals and its metrics listener to
	// the new supervisor of a binary upgrade, over ch, and stops serving.
	// It is called when this supervisor's workers have all exited.
	HandOver(ch *os.File) error
	// Close stops serving and waits for the exporter's goroutines.
	Close() error
}

// WorkerConfig is what a worker gives the exporter.
type WorkerConfig struct {
	Logger *slog.Logger
	HTTP   bool // the worker serves Run's http.Server: count its requests
}

// Worker is the exporter's worker side.
type Worker interface {
	// Handler wraps the worker's HTTP handler with the request metrics.
	Handler(h http.Handler) http.Handler
	// Close sends the worker's final totals and closes the channel. It is
	// called once the worker has stopped serving.
	Close() error
}
