package clusterflock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/clusterflock/clusterflock/reuseport"
	"github.com/clusterflock/clusterflock/supervisor"
	"golang.org/x/sys/unix"
)

// handledSignals returns the signals the supervisor acts on. Workers
// subscribe to the same set and act only on TERM and QUIT, so a signal sent
// to the whole process group has the effect it has on the supervisor alone
// (and TTIN/TTOU do not stop a worker, their default action).
func handledSignals() []os.Signal {
	return []os.Signal{
		syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGINT,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGHUP,
	}
}

// notifySignals subscribes a buffered channel to handledSignals; whoever
// receives from it calls signal.Stop when done.
func notifySignals() chan os.Signal {
	c := make(chan os.Signal, 16)
	signal.Notify(c, handledSignals()...)
	return c
}

// supervise runs the supervisor role until the pool has stopped. Signals
// arrive on sigs (tests feed it directly); it stops them on return.
func supervise(ctx context.Context, o options, sigs chan os.Signal) error {
	defer signal.Stop(sigs)
	log := o.Logger
	res, err := reuseport.Reserve(o.Addr)
	if err != nil {
		return fmt.Errorf("clusterflock: cannot use Options.Addr %q: %w", o.Addr, err)
	}
	defer res.Close()
	addr := res.Addr()

	sp, err := newExecSpawner(o, addr)
	if err != nil {
		return err
	}
	defer sp.Close()

	sup, err := supervisor.New(supervisor.Config{
		Spawner:     sp,
		Workers:     o.Workers,
		StopTimeout: o.ShutdownTimeout,
		Logger:      log,
	})
	if err != nil {
		return fmt.Errorf("clusterflock: %w", err)
	}
	log.Info("supervisor starting", "pid", os.Getpid(), "addr", addr, "workers", o.Workers)

	stopSignals := make(chan struct{})
	signalsDone := make(chan struct{})
	go func() {
		defer close(signalsDone)
		for {
			select {
			case <-stopSignals:
				return
			case sig := <-sigs:
				log.Info("signal received", "signal", unix.SignalName(sig.(syscall.Signal)))
				switch sig {
				case syscall.SIGTTIN:
					sup.Add()
				case syscall.SIGTTOU:
					sup.Retire()
				case syscall.SIGTERM, syscall.SIGQUIT:
					sup.Stop()
				case syscall.SIGINT:
					sup.Kill()
				case syscall.SIGHUP:
					sup.Restart()
				}
			}
		}
	}()
	err = sup.Run(ctx)
	close(stopSignals)
	<-signalsDone

	var se *supervisor.StartError
	var te *supervisor.StopTimeoutError
	switch {
	case err == nil:
		log.Info("supervisor stopped", "pid", os.Getpid())
		return nil
	case errors.Is(err, supervisor.ErrKilled):
		return ErrInterrupted
	case errors.As(err, &se):
		return fmt.Errorf("clusterflock: workers cannot serve on %s: %w", addr, err)
	case errors.As(err, &te):
		return fmt.Errorf("clusterflock: ShutdownTimeout exceeded: %w", err)
	}
	return fmt.Errorf("clusterflock: %w", err)
}
