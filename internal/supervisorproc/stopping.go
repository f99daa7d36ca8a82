//go:build unix

package supervisorproc

import (
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/supervisor"
)

// How the pool's stop combines with the program's own signal handling:
//
//   - The program's context ending is a graceful stop, like TERM. With
//     Options.DrainDelay, either first begins the lame-duck period: the
//     workers keep serving (told by proto.DrainSignal, so that
//     clusterflock.Draining is true and responses say Connection: close)
//     for DrainDelay, then the pool stops gracefully.
//   - SIGINT stops at once, unless the program's context ends because of
//     that same SIGINT (signal.NotifyContext(ctx, os.Interrupt, …): the
//     program asked for Ctrl-C to be graceful). Then it is graceful, and a
//     second SIGINT stops at once.

// interruptWait bounds how long a SIGINT waits for the program's context
// to end with it: both are delivered at once, in either order.
const interruptWait = 100 * time.Millisecond

// interruptByContext reports whether the program's context ends, within
// interruptWait, because of the SIGINT just received.
func (d *dispatcher) interruptByContext() bool {
	if d.ctx == nil || d.ctx.Done() == nil {
		return false // a context that never ends (context.Background)
	}
	select {
	case <-d.ctx.Done():
	case <-time.After(interruptWait):
		return false
	}
	sig, ok := proto.SignalCause(d.ctx)
	return ok && sig == syscall.SIGINT.String()
}

// interrupt handles SIGINT.
func (d *dispatcher) interrupt() {
	if !d.interrupted {
		d.interrupted = true
		if d.interruptByContext() {
			d.cfg.Logger.Info("SIGINT: the program's context ends with it (signal.NotifyContext): a graceful stop; a second SIGINT stops at once")
			d.gracefulStop("interrupt, through the program's context")
			return
		}
	}
	d.stopping = true
	d.sup.Kill()
}

// gracefulStop begins a graceful stop of the pool, after the lame-duck
// period if Options.DrainDelay is set; a second one changes nothing.
func (d *dispatcher) gracefulStop(why string) {
	if d.stopping {
		return
	}
	d.stopping = true
	if d.cfg.DrainDelay <= 0 {
		d.sup.StopFor(why)
		return
	}
	d.stopWhy = why
	d.lameDuck.Store(true)
	for _, w := range d.sup.Workers() {
		tellDraining(w.Pid)
	}
	d.sup.Report(supervisor.Event{Kind: supervisor.EventLameDuck, Reason: why + "; serving for DrainDelay " + d.cfg.DrainDelay.String() + " before the stop"})
	d.sd.stopping("lame duck: " + why)
	d.drained = time.After(d.cfg.DrainDelay)
}

// lameDuckOver ends the lame-duck period: the graceful stop begins.
func (d *dispatcher) lameDuckOver() {
	d.drained = nil
	d.sup.StopFor(d.stopWhy + " (after DrainDelay)")
}

// tellDraining tells worker pid that the pool is in its lame-duck period.
func tellDraining(pid int) {
	if proto.HasDrainSignal && pid > 0 {
		_ = syscall.Kill(pid, proto.DrainSignal)
	}
}

// contextDone handles the end of the program's context.
func (d *dispatcher) contextDone() {
	d.ctxDone = nil
	why := "context done"
	if sig, ok := proto.SignalCause(d.ctx); ok {
		why = "context done: " + sig + " signal received"
	}
	d.gracefulStop(why)
}
