//go:build unix

package clusterflock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/signame"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"golang.org/x/sys/unix"
)

// init marks the descriptors a worker or a new supervisor inherits
// close-on-exec before any of the program's code runs, so that a process the
// program starts before Run does not hold the pool's sockets or pipes (a
// listening socket held elsewhere would also stay in the pool's group).
// Only a marker naming this process's parent counts, as in workerEnv and
// takeUpgradeRole.
func init() {
	if w, err := proto.ParseWorkerEnv(os.Getenv(proto.EnvWorker)); err == nil && w.SupervisorPID == os.Getppid() {
		for fd := proto.StatusFD; fd <= proto.ControlFD; fd++ {
			syscall.CloseOnExec(fd)
		}
	}
	if u, err := proto.ParseUpgradeEnv(os.Getenv(proto.EnvUpgrade)); err == nil && u.OldPID == os.Getppid() {
		syscall.CloseOnExec(proto.StatusFD)
		for i := range max(u.Socks, 1) {
			syscall.CloseOnExec(proto.ListenerFD + i)
		}
	}
}

// heartbeatInterval is how often a worker tells the supervisor it is alive:
// every second, and at least four times per HeartbeatTimeout.
func heartbeatInterval(timeout time.Duration) time.Duration {
	return max(min(time.Second, timeout/4), time.Millisecond)
}

// runWorker is the worker role: listen on the pool's address, tell the
// supervisor, run serve until asked to stop, then stop it and return.
func runWorker(ctx context.Context, serve ServeFunc, o options, env proto.WorkerEnv, rec *recycler) error {
	// The inherited fds must not leak into the handler's subprocesses, and
	// the marker must not make them think they are workers.
	syscall.CloseOnExec(proto.StatusFD)
	syscall.CloseOnExec(proto.LifelineFD)
	os.Unsetenv(proto.EnvWorker)
	status := &statusWriter{f: os.NewFile(proto.StatusFD, "clusterflock-status")}
	defer status.f.Close()
	lifeline := os.NewFile(proto.LifelineFD, "clusterflock-lifeline")
	defer lifeline.Close()

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, handledSignals()...)
	defer signal.Stop(sigs)
	orphaned := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, lifeline) // returns at EOF: the supervisor is gone
		close(orphaned)
	}()
	var inherited *os.File // a standby's listener, received on activation
	if env.Slot == proto.StandbySlot {
		var ok bool
		var err error
		env, inherited, ok, err = awaitActivation(env, status, sigs, orphaned)
		if err != nil {
			status.send(proto.Message{Kind: proto.Failed, Text: err.Error()})
			return fmt.Errorf("clusterflock: standby worker: %w", err)
		}
		if !ok {
			return nil // never activated: nothing served, nothing to stop
		}
	}
	log := o.Logger.With("pid", os.Getpid(), "slot", env.Slot, "generation", env.Generation)

	ln, err := workerListener(env, inherited)
	if err != nil {
		status.send(proto.Message{Kind: proto.Failed, Text: err.Error()})
		return fmt.Errorf("clusterflock: worker: %w", err)
	}
	if env.Migration == sharedMigration {
		// The accept queue is shared: nothing to migrate.
	} else if err := sockets.EnableMigration(ln, sockets.Migration(env.Migration)); err != nil {
		log.Warn("cannot enable connection migration on this worker's listener", "migration", env.Migration, "err", err)
	}
	ln = &onceCloseListener{Listener: ln}
	defer ln.Close()

	info := WorkerInfo{Slot: env.Slot, Generation: env.Generation, PID: os.Getpid(), SupervisorPID: env.SupervisorPID}
	sctx, stop := context.WithCancel(context.WithValue(ctx, workerKey{}, info))
	defer stop()
	served := make(chan error, 1)
	go func() { served <- serve(sctx, ln) }()
	status.send(proto.Message{Kind: proto.Ready})

	beat := time.NewTicker(heartbeatInterval(o.HeartbeatTimeout))
	defer beat.Stop()

wait:
	for {
		select {
		case <-beat.C:
			status.send(proto.Message{Kind: proto.Heartbeat})
			if n, over := rec.over(); over {
				// Asked again each beat until the supervisor acts on it.
				status.send(proto.Message{Kind: proto.Retiring, Text: fmt.Sprintf("served %d requests (MaxRequests)", n)})
			}
		case sig := <-sigs:
			if sig == syscall.SIGTERM || sig == syscall.SIGQUIT {
				log.Debug("worker stopping", "signal", signame.Of(sig))
				break wait
			} // the supervisor acts on the others
		case <-orphaned:
			log.Warn("supervisor is gone; worker stopping")
			break wait
		case <-ctx.Done():
			break wait
		case err := <-served:
			if err == nil {
				err = errors.New("the serve function returned before the worker was asked to stop")
			}
			status.send(proto.Message{Kind: proto.Failed, Text: err.Error()})
			return fmt.Errorf("clusterflock: worker: %w", err)
		}
	}
	// Stop: the serve function sees its context done; closing the listener
	// (after that) makes the kernel migrate connections still queued on it.
	stop()
	ln.Close()
	// The supervisor kills the worker at ShutdownTimeout; this deadline, a
	// little later, matters only if the supervisor is gone.
	limit := time.NewTimer(o.ShutdownTimeout + time.Second)
	defer limit.Stop()
	select {
	case err := <-served:
		if err != nil {
			return fmt.Errorf("clusterflock: worker stop: %w", err)
		}
		return nil
	case <-limit.C:
		return fmt.Errorf("clusterflock: worker stop: still serving %v after being asked to stop", o.ShutdownTimeout+time.Second)
	}
}

// awaitActivation is a standby worker's wait (Options.Spare): it reports
// that it stands by, then reads its slot and generation from ControlFD, with
// the slot's socket if the supervisor holds one. It reports false if it is
// not to serve: the supervisor closed its end (a new generation, or the pool
// stops), is gone, or sent TERM or QUIT.
func awaitActivation(env proto.WorkerEnv, status *statusWriter, sigs <-chan os.Signal, orphaned <-chan struct{}) (proto.WorkerEnv, *os.File, bool, error) {
	syscall.CloseOnExec(proto.ControlFD)
	type activation struct {
		line      string
		ln        *os.File
		truncated bool // a descriptor was sent but did not fit (EMFILE)
	}
	got := make(chan activation, 1)
	// If the standby is not activated, this read stays blocked until the
	// process exits, which it does once Run returns.
	go func() {
		var a activation
		buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
		for !strings.HasSuffix(a.line, "\n") {
			n, oobn, flags, _, err := unix.Recvmsg(proto.ControlFD, buf, oob, recvFlags)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				break
			}
			if flags&unix.MSG_CTRUNC != 0 {
				a.truncated = true
			}
			a.line += string(buf[:n])
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if fds, err := unix.ParseUnixRights(&m); err == nil {
						for _, fd := range fds {
							unix.CloseOnExec(fd) // nothing forks before activation
							if a.ln == nil {
								a.ln = os.NewFile(uintptr(fd), "clusterflock-listener")
							} else {
								unix.Close(fd)
							}
						}
					}
				}
			}
		}
		unix.Close(proto.ControlFD)
		got <- a
	}()
	status.send(proto.Message{Kind: proto.Standby})
	for {
		select {
		case a := <-got:
			if _, err := fmt.Sscanf(a.line, "%d %d\n", &env.Slot, &env.Generation); err != nil || env.Slot < 0 {
				if a.ln != nil {
					a.ln.Close()
				}
				return env, nil, false, nil
			}
			if env.Migration == string(sockets.MigrationCBPF) && a.ln == nil {
				why := "the activation carried no listening socket"
				if a.truncated {
					why += " (it did not fit: too many open files?)"
				}
				return env, nil, false, errors.New(why)
			}
			return env, a.ln, true, nil
		case sig := <-sigs:
			if sig == syscall.SIGTERM || sig == syscall.SIGQUIT {
				return env, nil, false, nil
			}
		case <-orphaned:
			return env, nil, false, nil
		}
	}
}

// statusWriter writes messages to the supervisor, one at a time.
type statusWriter struct {
	mu sync.Mutex
	f  *os.File
}

func (s *statusWriter) send(m proto.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = proto.Write(s.f, m) // a write error means the supervisor is gone: the lifeline says so
}

// onceCloseListener lets drain close the listener before Shutdown does.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}
