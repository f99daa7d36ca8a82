//go:build unix

package clusterflock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/clusterflock/clusterflock/control"
	"github.com/clusterflock/clusterflock/internal/cpus"
	"github.com/clusterflock/clusterflock/internal/plug"
	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/internal/supervisorproc"
	"github.com/clusterflock/clusterflock/internal/workerproc"
	"github.com/clusterflock/clusterflock/supervisor"
)

// run is the role dispatch behind Run and Serve: the worker role in a
// process whose marker names its parent, else the supervisor role. A marker
// that is malformed or names another process is an error, never a reason to
// become a supervisor: that would start a pool inside a pool (for instance in
// a worker whose supervisor died as it started).
func run(ctx context.Context, mk func(plug.Worker) ServeFunc, o options, reqs *requests) error {
	env, ok, err := proto.LookupWorker()
	switch {
	case err != nil:
		return fmt.Errorf("clusterflock: %w; refusing to start a pool inside a worker", err)
	case ok:
		cfg := workerproc.Config{Timing: o.timing(), Logger: o.Logger, MemoryLimit: o.MemoryLimit}
		if reqs != nil { // Run: HTTP requests are counted
			cfg.Recycle, cfg.Load = reqs.recycle, reqs.load
			if o.StuckTimeout > 0 {
				cfg.Stuck, cfg.StuckTimeout, cfg.DumpDir = reqs.stuck, o.StuckTimeout, control.DefaultDir()
			}
		}
		m, err := workerMetrics(o, reqs != nil)
		if err != nil {
			return err
		}
		if m != nil {
			cfg.Metrics = m
		}
		serve := mk(m)
		duck := newLameDuck()
		cfg.Draining = duck.begin
		return workerproc.Run(ctx, cfg, env, func(ctx context.Context, ln net.Listener, env proto.WorkerEnv) error {
			info := WorkerInfo{Slot: env.Slot, Generation: env.Generation, PID: os.Getpid(), SupervisorPID: env.SupervisorPID}
			ctx = context.WithValue(context.WithValue(ctx, workerKey{}, info), lameDuckKey{}, duck)
			stop := context.AfterFunc(ctx, duck.drainStarts) // the worker's stop begins its drain
			defer stop()
			return serve(ctx, ln)
		})
	}
	err = supervisorproc.Run(ctx, o.supervisorConfig(), supervisorproc.Notify())
	if errors.Is(err, supervisor.ErrKilled) {
		return ErrInterrupted
	}
	return err
}

// workerMetrics starts Options.Metrics' worker side on the channel the
// supervisor passed, or returns nil: without Options.Metrics (the channel,
// if any, is closed: the supervisor sees this worker has none), or under a
// supervisor that passed none (an older build's, during a rolling restart).
func workerMetrics(o options, http bool) (plug.Worker, error) {
	if !proto.TakeFlag(proto.EnvMetrics) {
		return nil, nil
	}
	ch := os.NewFile(proto.MetricsFD, "clusterflock-metrics")
	if o.Metrics == nil {
		ch.Close()
		return nil, nil
	}
	m, err := o.Metrics.Worker(plug.WorkerConfig{Logger: o.Logger, HTTP: http}, ch)
	if err != nil {
		return nil, fmt.Errorf("clusterflock: worker metrics: %w", err)
	}
	return m, nil
}

// supervisorConfig is what the supervisor role needs of o: Workers 0 becomes
// the CPUs this process may use.
func (o options) supervisorConfig() supervisorproc.Config {
	n, source := cpus.Available()
	workers, from := o.Workers, supervisorproc.WorkersFromOptions
	if workers == 0 {
		workers, from = n, supervisorproc.WorkersFromCPUs
	}
	return supervisorproc.Config{
		Workers:          workers,
		Addr:             o.Addr,
		Migration:        sockets.Migration(o.Migration),
		Timing:           o.timing(),
		HeartbeatTimeout: o.HeartbeatTimeout,
		GOMAXPROCS:       o.GOMAXPROCS,
		RestartSurge:     o.RestartSurge,
		Spare:            o.Spare,
		Logger:           o.Logger,
		OnEvent:          o.OnEvent,
		ControlSocket:    o.ControlSocket,
		Metrics:          o.Metrics,
		MemoryLimit:      o.MemoryLimit,
		KeepSysmonAwake:  o.KeepSysmonAwake,
		DrainDelay:       o.DrainDelay,
		CPUs:             n,
		CPUsSource:       string(source),
		WorkersFrom:      from,
	}
}
