//go:build unix

// Package workerproc is the worker process's side of a clusterflock pool:
// what runs in each re-executed worker. It takes over the descriptors the
// supervisor passed (status pipe, lifeline, listener), opens or inherits the
// listener, runs the serve function, reports ready, heartbeats and failures
// to the supervisor, and stops the serve function when asked to (TERM, QUIT),
// when the context ends or when the supervisor is gone.
package workerproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/signame"
	"golang.org/x/sys/unix"
)

// Config is what a worker needs of the pool's options.
type Config struct {
	Timing proto.Timing
	Logger *slog.Logger
	// Recycle, if set, is asked at each heartbeat whether the worker wants
	// to be replaced (Options.MaxRequests), and why.
	Recycle func() (why string, ok bool)
	// Load, if set, is the requests served and in flight, which each
	// heartbeat reports.
	Load func() (served, inFlight int64)
	// Stuck, if set with StuckTimeout, returns the requests in flight (not
	// hijacked) and the progress count (see guard.Stuck).
	Stuck        func() (inFlight, progress int64)
	StuckTimeout time.Duration
	DumpDir      string // where a stuck worker's goroutine dump is written
	// MemoryLimit, if positive, is the RSS above which (sustained) the
	// worker asks to be replaced.
	MemoryLimit int64
	// Draining, if set, is called when the pool's lame-duck period begins
	// (Options.DrainDelay, proto.DrainSignal).
	Draining func()
	// Metrics, if set, is closed once the worker has stopped serving (or
	// failed): it sends the worker's final metrics (Options.Metrics).
	Metrics io.Closer
}

// ServeFunc serves on ln until ctx is done, then stops gracefully; env is the
// worker's marker (slot, generation, supervisor).
type ServeFunc func(ctx context.Context, ln net.Listener, env proto.WorkerEnv) error

// Run is the worker role: listen on the pool's address, tell the supervisor,
// run serve until asked to stop, then stop it and return. env is the marker
// from [proto.LookupWorker].
func Run(ctx context.Context, cfg Config, env proto.WorkerEnv, serve ServeFunc) error {
	// The inherited fds must not leak into the handler's subprocesses, and
	// the marker must not make them think they are workers.
	syscall.CloseOnExec(proto.StatusFD)
	syscall.CloseOnExec(proto.LifelineFD)
	os.Unsetenv(proto.EnvWorker)
	status := &statusWriter{f: os.NewFile(proto.StatusFD, "clusterflock-status"), readsClosed: proto.TakeFlag(proto.EnvClosed)}
	defer status.f.Close()
	lifeline := os.NewFile(proto.LifelineFD, "clusterflock-lifeline")
	defer lifeline.Close()

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, proto.Signals()...)
	if proto.HasDrainSignal {
		signal.Notify(sigs, proto.DrainSignal)
	}
	defer signal.Stop(sigs)
	w := &worker{cfg: cfg, env: env, status: status, sigs: sigs, lifeline: lifeline, orphaned: make(chan struct{})}
	return w.run(ctx, serve)
}

// worker is one worker process's state while Run runs.
type worker struct {
	cfg      Config
	env      proto.WorkerEnv
	status   *statusWriter
	sigs     <-chan os.Signal
	lifeline *os.File
	orphaned chan struct{} // closed by watchLifeline
}

// watchLifeline closes w.orphaned once the lifeline reaches EOF: the
// supervisor is gone. Called once.
func (w *worker) watchLifeline() {
	go func() {
		_, _ = io.Copy(io.Discard, w.lifeline) // returns at EOF; a blocking read, which Close does not end: the process is exiting then
		close(w.orphaned)
	}()
}

func (w *worker) run(ctx context.Context, serve ServeFunc) error {
	if w.cfg.Metrics != nil {
		defer w.cfg.Metrics.Close()
	}
	var inherited *os.File // a standby's listener, received on activation
	standby := w.env.Slot == proto.StandbySlot
	if standby {
		w.watchLifeline()
		var ok bool
		var err error
		w.env, inherited, ok, err = awaitActivation(w.env, w.status, w.sigs, w.orphaned)
		if err != nil {
			return w.fail("standby worker", err)
		}
		if !ok {
			return nil // never activated: nothing served, nothing to stop
		}
	}
	log := w.cfg.Logger.With("pid", os.Getpid(), "slot", w.env.Slot, "generation", w.env.Generation)
	raw, err := listen(w.env, inherited)
	if err != nil {
		return w.fail("worker", err)
	}
	ln := &reportingListener{Listener: raw, status: w.status}
	defer ln.Close()

	// The serve function stops when the pool says so; the program's
	// context, ended by a signal that the supervisor acts on, does not
	// stop it (see serving).
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	served := make(chan error, 1)
	go func() { served <- serve(sctx, ln, w.env) }()
	// The socket takes its share of new connections from listen on: let the
	// serve function reach its accept loop before the rest of the start-up
	// (its own goroutines would otherwise wait for this one to block). The
	// migration program goes on before ready: the supervisor stops other
	// workers only once this one is ready.
	runtime.Gosched()
	enableMigration(raw, w.env, log)
	w.status.send(proto.Message{Kind: proto.Ready})
	directStderr()
	if !standby {
		w.watchLifeline()
	}
	if err := w.serving(ctx, served, log); err != nil {
		return w.fail("worker", err)
	}
	// Stop: the serve function sees its context done; closing the listener
	// (after that) makes the kernel migrate connections still queued on it.
	stop()
	ln.Close()
	return w.stopped(served)
}

// directStderr moves the supervisor's stderr (proto.StderrFD) to fd 2 once
// the worker serves: from now on it writes there directly, not through the
// supervisor's start-up pipe.
func directStderr() {
	if unix.Dup2(proto.StderrFD, 2) == nil {
		unix.Close(proto.StderrFD)
	}
}

// fail tells the supervisor why the worker cannot serve, and returns it.
func (w *worker) fail(what string, err error) error {
	w.status.send(proto.Message{Kind: proto.Failed, Text: err.Error()})
	return fmt.Errorf("clusterflock: %s: %w", what, err)
}

// serving heartbeats until the worker is asked to stop (nil), or the serve
// function returns on its own (its error).
func (w *worker) serving(ctx context.Context, served <-chan error, log *slog.Logger) error {
	beat := time.NewTicker(w.cfg.Timing.Heartbeat)
	defer beat.Stop()
	g := newGuards(w.cfg, log)
	done := ctx.Done()
	for {
		select {
		case <-beat.C:
			w.status.send(w.heartbeat())
			for _, m := range g.check(time.Now()) {
				w.status.send(m) // again each beat until the supervisor acts on it
			}
		case sig := <-w.sigs:
			switch {
			case sig == syscall.SIGTERM || sig == syscall.SIGQUIT:
				log.Debug("worker stopping", "signal", signame.Of(sig))
				return nil
			case sig == proto.DrainSignal && proto.HasDrainSignal && w.cfg.Draining != nil:
				log.Debug("worker in the pool's lame-duck period")
				w.cfg.Draining()
			} // the supervisor acts on the others
		case <-w.orphaned:
			log.Warn("supervisor is gone; worker stopping")
			return nil
		case <-done:
			if _, ok := proto.SignalCause(ctx); ok {
				// signal.NotifyContext in a worker saw a signal sent to the
				// whole process group (Ctrl-C): the supervisor got it too
				// and decides; this worker serves until told.
				log.Debug("the program's context ended by a signal; the supervisor decides", "cause", context.Cause(ctx).Error())
				done = nil
				continue
			}
			return nil
		case err := <-served:
			if err == nil {
				err = errors.New("the serve function returned before the worker was asked to stop")
			}
			return err
		}
	}
}

// heartbeat is the heartbeat message, with the worker's load if known.
func (w *worker) heartbeat() proto.Message {
	m := proto.Message{Kind: proto.Heartbeat}
	if w.cfg.Load != nil {
		served, inFlight := w.cfg.Load()
		m.Text = proto.Load{Served: served, InFlight: inFlight}.Encode()
	}
	return m
}

// stopped waits for the serve function to finish its stop. The supervisor
// kills the worker at ShutdownTimeout; this deadline, a little later,
// matters only if the supervisor is gone.
func (w *worker) stopped(served <-chan error) error {
	limit := time.NewTimer(w.cfg.Timing.WorkerStop)
	defer limit.Stop()
	select {
	case err := <-served:
		if err != nil {
			return fmt.Errorf("clusterflock: worker stop: %w", err)
		}
		return nil
	case <-limit.C:
		return fmt.Errorf("clusterflock: worker stop: still serving %v after being asked to stop", w.cfg.Timing.WorkerStop)
	}
}
