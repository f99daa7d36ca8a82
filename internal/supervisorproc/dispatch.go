//go:build unix

package supervisorproc

import (
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/signame"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/supervisor"
)

// pool is what the dispatcher drives: the supervisor's methods it uses (a
// seam, so that its decisions are tested with a fake).
type pool interface {
	Add() bool
	Retire() bool
	Stop() bool
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
	// startSuccessor starts a binary upgrade's new supervisor (a seam for
	// tests).
	startSuccessor func(lis listeners, socks []*sockets.Socket, own *children, results chan<- upgradeResult) (*successor, error)
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
	switch sig {
	case syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGHUP:
		if d.pending != nil {
			// The new supervisor sizes its own pool; changing this one
			// now would be undone, and a steered group's order must
			// not change under it.
			d.refuse(sig, "a binary upgrade is under way", d.pending.pid)
			return
		}
	}
	switch sig {
	case syscall.SIGTTIN:
		if why := d.lis.refuse(reqAdd); why != "" {
			d.refuse(sig, why, 0)
			return
		}
		d.sup.Add()
	case syscall.SIGTTOU:
		if why := d.lis.refuse(reqRetire); why != "" {
			d.refuse(sig, why, 0)
			return
		}
		d.sup.Retire()
	case syscall.SIGTERM, syscall.SIGQUIT:
		d.stopping = true
		d.sup.Stop()
	case syscall.SIGINT:
		d.stopping = true
		d.sup.Kill()
	case syscall.SIGHUP:
		d.sup.Restart()
	case syscall.SIGUSR2:
		d.startUpgrade()
	case syscall.SIGUSR1:
		d.logWorkers()
	}
}

// refuse reports that the request sig stands for is refused, and why;
// newPid is the binary upgrade's new supervisor it concerns, if any.
func (d *dispatcher) refuse(sig os.Signal, why string, newPid int) {
	d.sup.Report(supervisor.Event{Kind: supervisor.EventRefused, Reason: signame.Of(sig) + ": " + why, Pid: newPid})
}

func (d *dispatcher) startUpgrade() {
	switch {
	case d.stopping:
		d.refuse(syscall.SIGUSR2, "binary upgrade: the pool is stopping", 0)
		return
	case d.pending != nil:
		d.refuse(syscall.SIGUSR2, "binary upgrade: one is already under way", d.pending.pid)
		return
	}
	// A barrier: TTIN and TTOU sent just before are carried out (the
	// supervisor handles commands in order) before the hand-over.
	d.sup.Workers()
	socks, busy := d.lis.handOver()
	if busy != "" {
		d.refuse(syscall.SIGUSR2, "binary upgrade: "+busy, 0)
		return
	}
	s, err := d.startSuccessor(d.lis, socks, d.own, d.upgrades)
	if err != nil {
		d.cfg.Logger.Error("binary upgrade failed: cannot start a new supervisor", "err", err.Error())
		d.lis.upgradeFailed(false)
		d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "failed: cannot start a new supervisor: " + err.Error()})
		return
	}
	d.pending = s
	d.cfg.Logger.Info("binary upgrade: new supervisor started", "new_pid", s.pid)
	d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "begin", Pid: s.pid})
}

// upgraded handles the end of a binary upgrade: the new supervisor serves
// (this one hands over and stops), or it failed (this one keeps serving).
func (d *dispatcher) upgraded(res upgradeResult) {
	d.pending = nil
	if res.err != nil {
		d.cfg.Logger.Error("binary upgrade failed; the old pool keeps serving", "err", res.err.Error())
		d.lis.upgradeFailed(true)
		d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "failed: " + res.err.Error(), Pid: res.pid})
		return
	}
	d.cfg.Logger.Info("binary upgrade: the new supervisor serves; stopping this one", "new_pid", res.pid)
	d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "done", Pid: res.pid})
	d.sd.mainPID(res.pid)
	d.stopping = true
	d.sup.Stop()
}

// abandonUpgrade stops a new supervisor that was not ready when this one
// stopped, and waits (bounded) until it has exited.
func (d *dispatcher) abandonUpgrade() {
	if d.pending == nil {
		return
	}
	d.cfg.Logger.Warn("stopping the unfinished binary upgrade", "new_pid", d.pending.pid)
	d.pending.abandon(d.upgrades, d.cfg.Timing.Orphans)
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
