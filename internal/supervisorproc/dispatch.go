//go:build unix

package supervisorproc

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/signame"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/supervisor"
)

// pool is what the dispatcher drives: the supervisor's methods it uses (a
// seam, so that its decisions are tested with a fake).
type pool interface {
	Snapshot() supervisor.Snapshot
	Add() bool
	Retire() bool
	StopFor(why string) bool
	StopInTurn(why string) bool
	Kill() bool
	Restart() bool
	Workers() []supervisor.Worker
	Report(supervisor.Event) bool
}

// dispatcher turns signals and upgrade results into pool actions, or
// refusals with the reason. It runs on its own goroutine while the
// supervisor runs.
type dispatcher struct {
	cfg      Config
	sup      pool
	lis      listeners
	sd       *systemd
	own      *children
	upgrades chan upgradeResult
	pending  *successor // a new supervisor that is not ready yet
	stopping bool
	// calls are the control socket's requests, carried out here in order
	// with the signals.
	calls chan call
	// startSuccessor starts a binary upgrade's new supervisor (a seam for
	// tests).
	startSuccessor func(lis listeners, socks []*sockets.Socket, workers int, metrics bool, own *children, results chan<- upgradeResult) (*successor, error)
	// handover is the metrics hand-over channel to the new supervisor of
	// a binary upgrade that is done, or nil: Run hands the totals over on
	// it once the pool has stopped.
	handover *os.File

	// The pool's stop (see stopping.go).
	ctx         context.Context // the program's context
	ctxDone     <-chan struct{} // ctx.Done() until handled
	interrupted bool            // a SIGINT was received
	lameDuck    *atomic.Bool    // the lame-duck period has begun (shared with hooks)
	stopWhy     string
	drained     <-chan time.Time // the lame-duck period's end
}

func (d *dispatcher) run(received <-chan os.Signal, stop <-chan struct{}) {
	defer d.abandonUpgrade()
	var wg sync.WaitGroup
	defer wg.Wait()
	sigs := make(chan os.Signal)
	wg.Go(func() { intake(received, sigs, stop) })
	var watchdog <-chan time.Time
	if iv := watchdogInterval(); iv > 0 && d.sd.n.Enabled() {
		t := time.NewTicker(iv)
		defer t.Stop()
		watchdog = t.C
	}
	for {
		select {
		case <-stop:
			return
		case <-watchdog:
			if d.sup.Workers() != nil && !d.sd.handedOver.Load() { // the supervisor's loop answers
				d.sd.send("WATCHDOG=1")
			}
		case res := <-d.upgrades:
			d.upgraded(res)
		case sig := <-sigs:
			d.signal(sig)
		case c := <-d.calls:
			c.result <- d.answer(c)
		case <-d.ctxDone:
			d.contextDone()
		case <-d.drained:
			d.lameDuckOver()
		}
	}
}

// intake moves signals from in to out through a queue without bound, so
// that receiving a signal never waits on acting on one: os/signal drops
// what does not fit in its channel, and an action (a fork, a sock_diag
// check) takes milliseconds. It returns when stop is closed.
func intake(in <-chan os.Signal, out chan<- os.Signal, stop <-chan struct{}) {
	var queue []os.Signal
	for {
		var send chan<- os.Signal
		var next os.Signal
		if len(queue) > 0 {
			send, next = out, queue[0]
		}
		select {
		case sig := <-in:
			queue = append(queue, sig)
		case send <- next:
			queue = queue[1:]
		case <-stop:
			return
		}
	}
}

// signal acts on sig, or refuses it with the reason.
func (d *dispatcher) signal(sig os.Signal) {
	d.cfg.Logger.Info("signal received", "signal", signame.Of(sig))
	d.act(sig)
}

// act carries out the action sig stands for (also when the control socket
// asks for it), or refuses it: a refusal is reported as an event and its
// reason returned ("" if the action began).
func (d *dispatcher) act(sig os.Signal) string {
	if why, newPid := d.refusal(sig); why != "" {
		d.sup.Report(supervisor.Event{Kind: supervisor.EventRefused, Reason: signame.Of(sig) + ": " + why, Pid: newPid})
		return why
	}
	switch sig {
	case syscall.SIGTTIN:
		d.sup.Add()
	case syscall.SIGTTOU:
		d.sup.Retire()
	case syscall.SIGTERM, syscall.SIGQUIT:
		d.gracefulStop("requested")
	case syscall.SIGINT:
		d.interrupt()
	case syscall.SIGHUP:
		d.sup.Restart()
	case syscall.SIGUSR2:
		return d.startUpgrade()
	case syscall.SIGUSR1:
		d.logWorkers()
	}
	return ""
}

// refusal says why sig may not act now, or "", and the binary upgrade's new
// supervisor it concerns, if any.
func (d *dispatcher) refusal(sig os.Signal) (string, int) {
	switch sig {
	case syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGHUP:
		if d.pending != nil {
			// The new supervisor sizes its own pool; changing this one
			// now would be undone, and a steered group's order must
			// not change under it.
			return "a binary upgrade is under way", d.pending.pid
		}
	case syscall.SIGUSR2:
		switch {
		case d.stopping:
			return "binary upgrade: the pool is stopping", 0
		case d.pending != nil:
			return "binary upgrade: one is already under way", d.pending.pid
		}
	}
	switch sig {
	case syscall.SIGTTIN:
		return d.lis.refuse(reqAdd), 0
	case syscall.SIGTTOU:
		return d.lis.refuse(reqRetire), 0
	}
	return "", 0
}

// startUpgrade hands the sockets over and starts the new supervisor; it
// returns why not, if it cannot.
func (d *dispatcher) startUpgrade() string {
	// A barrier: TTIN and TTOU sent just before are carried out (the
	// supervisor handles commands in order) before the hand-over, and
	// the pool's size as they left it goes to the new supervisor.
	size := d.sup.Snapshot().Desired
	socks, busy := d.lis.handOver()
	if busy != "" {
		why := "binary upgrade: " + busy
		d.sup.Report(supervisor.Event{Kind: supervisor.EventRefused, Reason: signame.Of(syscall.SIGUSR2) + ": " + why})
		return why
	}
	s, err := d.startSuccessor(d.lis, socks, size, d.cfg.Metrics != nil, d.own, d.upgrades)
	if err != nil {
		d.cfg.Logger.Error("binary upgrade failed: cannot start a new supervisor", "err", err.Error())
		d.lis.upgradeFailed(false)
		why := "cannot start a new supervisor: " + err.Error()
		d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "failed: " + why})
		return why
	}
	d.pending = s
	d.cfg.Logger.Info("binary upgrade: new supervisor started", "new_pid", s.pid, "workers", size)
	d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "begin", Pid: s.pid})
	return ""
}

// call is a request of the control socket: an action named by its signal,
// or (sig nil) the pool's state.
type call struct {
	sig    os.Signal
	result chan<- answer
}

// answer is what the dispatcher says to a call.
type answer struct {
	refused  string // why the action was refused, or ""
	snap     supervisor.Snapshot
	upgrader int // the pending binary upgrade's new supervisor, or 0
}

func (d *dispatcher) answer(c call) answer {
	if c.sig == nil {
		a := answer{snap: d.sup.Snapshot()}
		if d.pending != nil {
			a.upgrader = d.pending.pid
		}
		return a
	}
	d.cfg.Logger.Info("control request", "request", signame.Of(c.sig))
	return answer{refused: d.act(c.sig)}
}

// upgraded handles the end of a binary upgrade: the new supervisor serves
// (this one hands over and stops), or it failed (this one keeps serving).
func (d *dispatcher) upgraded(res upgradeResult) {
	s := d.pending
	d.pending = nil
	if res.err != nil {
		if s != nil && s.handover != nil {
			s.handover.Close()
		}
		d.cfg.Logger.Error("binary upgrade failed; the old pool keeps serving", "err", res.err.Error())
		d.lis.upgradeFailed(true)
		d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "failed: " + res.err.Error(), Pid: res.pid})
		return
	}
	d.cfg.Logger.Info("binary upgrade: the new supervisor serves; stopping this one", "new_pid", res.pid)
	d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "done", Pid: res.pid})
	d.sd.mainPID(res.pid)
	if s != nil {
		d.handover = s.handover
	}
	d.stopping = true
	// The new pool serves on the same listeners' group: the old workers
	// close theirs one at a time (see supervisor.StopInTurn).
	d.sup.StopInTurn("requested")
}

// abandonUpgrade stops a new supervisor that was not ready when this one
// stopped, and waits (bounded) until it has exited.
func (d *dispatcher) abandonUpgrade() {
	if d.pending == nil {
		return
	}
	d.cfg.Logger.Warn("stopping the unfinished binary upgrade", "new_pid", d.pending.pid)
	d.pending.abandon(d.upgrades, d.cfg.Timing.Orphans)
	if d.pending.handover != nil {
		d.pending.handover.Close()
	}
}

// logWorkers logs one line per live worker (SIGUSR1).
func (d *dispatcher) logWorkers() {
	ws := d.sup.Workers()
	d.cfg.Logger.Info("worker table", "workers", len(ws))
	for _, w := range ws {
		d.cfg.Logger.Info("worker", "worker", w.ID, "slot", w.Slot, "generation", w.Generation, "pid", w.Pid,
			"state", string(w.State), "uptime", time.Since(w.Started).Round(time.Millisecond))
	}
}
