//go:build unix

package clusterflock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/sdnotify"
	"github.com/clusterflock/clusterflock/internal/signame"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/supervisor"
)

// handledSignals returns the signals the supervisor acts on. Workers
// subscribe to the same set and act only on TERM and QUIT, so a signal sent
// to the whole process group has the effect it has on the supervisor alone
// (and TTIN/TTOU do not stop a worker, their default action).
func handledSignals() []os.Signal {
	return []os.Signal{
		syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGINT,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2,
	}
}

// notifySignals subscribes a buffered channel to handledSignals; whoever
// receives from it calls signal.Stop when done.
func notifySignals() chan os.Signal {
	c := make(chan os.Signal, 16)
	signal.Notify(c, handledSignals()...)
	return c
}

// run is the role dispatch behind Run and Serve.
func run(ctx context.Context, serve ServeFunc, o options, rec *recycler) error {
	if env, ok, err := workerEnv(); err != nil {
		return err
	} else if ok {
		return runWorker(ctx, serve, o, env, rec)
	}
	return supervise(ctx, o, notifySignals())
}

// supervise runs the supervisor role until the pool has stopped. Signals
// arrive on sigs (tests feed it directly); it stops them on return.
func supervise(ctx context.Context, o options, sigs chan os.Signal) error {
	defer signal.Stop(sigs)
	log := o.Logger
	heir := takeUpgradeRole(log)
	if heir != nil {
		o.Addr = heir.env.Addr // the concrete address, even for port 0
	}
	err := superviseAs(ctx, o, sigs, heir)
	if err != nil {
		heir.fail(err)
	}
	return err
}

func superviseAs(ctx context.Context, o options, sigs chan os.Signal, heir *upgradeRole) error {
	log := o.Logger
	src, err := openListenerSource(o, heir)
	if err != nil {
		return err
	}
	defer src.Close()
	addr := src.addr

	mig, why := sockets.Migration(o.Migration), ""
	switch {
	case src.adopted != nil:
		if mig != "" && mig != sockets.MigrationCBPF {
			return fmt.Errorf("clusterflock: Options.Migration %q does not apply: the old supervisor passed a steered group (%q)", o.Migration, sockets.MigrationCBPF)
		}
		mig, why = sockets.MigrationCBPF, src.why
	case src.shared != nil:
		if mig != "" && mig != sharedMigration {
			return fmt.Errorf("clusterflock: Options.Migration %q does not apply: workers share one listener (%s)", o.Migration, src.why)
		}
		mig, why = sharedMigration, src.why
	case mig == "":
		mig, why = sockets.DetectMigration()
	default:
		if err := sockets.CheckMigration(mig); err != nil {
			return fmt.Errorf("clusterflock: Options.Migration %q is not available here: %w", o.Migration, err)
		}
	}

	if mig == sockets.MigrationCBPF {
		n, err := src.steerGroup(log, o.ShutdownTimeout)
		switch {
		case err != nil && o.Migration == "" && src.adopted == nil:
			// Auto: other listeners on the address (say, the workers
			// of an old supervisor that did not steer) make the order
			// unknowable.
			mig, why = sockets.MigrationNone, why+"; classic BPF steering: "+err.Error()
		case err != nil:
			return fmt.Errorf("clusterflock: migration %q on %s: %w", sockets.MigrationCBPF, addr, err)
		}
		if n > o.Workers {
			log.Info("binary upgrade: keeping the old pool's size, larger than Options.Workers", "pid", os.Getpid(), "workers", n, "options_workers", o.Workers)
			o.Workers = n
		}
	}

	own := &children{}
	sp, err := newExecSpawner(o, src, mig, own)
	if err != nil {
		return err
	}
	defer sp.Close()

	sd := &systemd{n: sdnotify.FromEnv(), log: log, addr: addr}
	sup, err := supervisor.New(supervisor.Config{
		Spawner:          sp,
		Workers:          o.Workers,
		StopTimeout:      o.ShutdownTimeout,
		HeartbeatTimeout: o.HeartbeatTimeout,
		Surge:            o.RestartSurge,
		Logger:           log,
		OnEvent:          o.OnEvent,
		Hooks:            &poolHooks{steer: src.steer, heir: heir, sd: sd},
	})
	if err != nil {
		return fmt.Errorf("clusterflock: %w", err)
	}
	start := []any{"pid", os.Getpid(), "addr", addr, "workers", o.Workers, "migration", string(mig)}
	if why != "" { // why a better mechanism is not in force
		start = append(start, "migration_reason", why)
	}
	if heir != nil {
		start = append(start, "upgrade_from", heir.env.OldPID)
	}
	log.Info("supervisor starting", start...)
	if mig == sockets.MigrationNone {
		ways := `run with CAP_BPF, set net.ipv4.tcp_migrate_req=1, or use Options.Migration "cbpf" or "shared"`
		if strings.Contains(why, "classic BPF steering") {
			ways = `run with CAP_BPF, set net.ipv4.tcp_migrate_req=1, or use Options.Migration "shared"`
		}
		log.Warn("no connection migration: a retiring worker may reset connections still queued on its listener; "+ways, "reason", why)
	}

	d := &dispatcher{o: o, sup: sup, src: src, sd: sd, own: own, upgrades: make(chan upgradeResult, 1)}
	if heir != nil {
		d.oldPID = heir.env.OldPID
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { d.run(sigs, stop) })
	if os.Getpid() == 1 {
		log.Info("running as PID 1: reaping orphaned processes")
		wg.Go(func() { reapOrphans(own, stop) })
	}
	err = sup.Run(ctx)
	close(stop)
	wg.Wait()

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

// dispatcher turns signals and upgrade results into supervisor calls. It
// runs on its own goroutine while the supervisor runs.
type dispatcher struct {
	o        options
	sup      *supervisor.Supervisor
	src      *listenerSource
	sd       *systemd
	own      *children
	upgrades chan upgradeResult
	pending  *successor // a new supervisor that is not ready yet
	stopping bool
	oldPID   int // the supervisor this one replaces (binary upgrade), or 0
	// With a steered group, the workers of a new supervisor that failed
	// may still hold the sockets until this time.
	failedUpgradeUntil time.Time
}

func (d *dispatcher) run(sigs <-chan os.Signal, stop <-chan struct{}) {
	log := d.o.Logger
	defer d.abandonUpgrade()
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
			d.pending = nil
			if res.err != nil {
				log.Error("binary upgrade failed; the old pool keeps serving", "err", res.err.Error())
				d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "failed: " + res.err.Error(), Pid: res.pid})
				if d.src.steer != nil {
					d.src.steer.resume()
					// Its workers (orphans now) drain and exit within
					// ShutdownTimeout+1s of losing their supervisor.
					d.failedUpgradeUntil = time.Now().Add(d.o.ShutdownTimeout + 2*time.Second)
				}
				continue
			}
			log.Info("binary upgrade: the new supervisor serves; stopping this one", "new_pid", res.pid)
			d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "done", Pid: res.pid})
			d.sd.mainPID(res.pid)
			d.stopping = true
			d.sup.Stop()
		case sig := <-sigs:
			log.Info("signal received", "signal", signame.Of(sig))
			if d.pending != nil && (sig == syscall.SIGTTIN || sig == syscall.SIGTTOU || sig == syscall.SIGHUP) {
				// The new supervisor sizes its own pool; changing this
				// one now would be undone, and a steered group's order
				// must not change under it.
				d.refuse(sig, "a binary upgrade is under way", d.pending.cmd.Process.Pid)
				continue
			}
			if why := d.groupUnsettled(sig); why != "" {
				d.refuse(sig, why, 0)
				continue
			}
			switch sig {
			case syscall.SIGTTIN:
				d.sup.Add()
			case syscall.SIGTTOU:
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
	}
}

// groupUnsettled says why sig may not change a steered group now, or "":
// a socket closed while another process still holds it does not leave the
// group when this supervisor's order says it does, and one opened while
// foreign sockets are in the group does not get the index it expects.
func (d *dispatcher) groupUnsettled(sig os.Signal) string {
	if d.src.steer == nil || (sig != syscall.SIGTTOU && sig != syscall.SIGTTIN) {
		return ""
	}
	switch {
	case sig == syscall.SIGTTOU && d.oldPID != 0 && os.Getppid() == d.oldPID:
		return fmt.Sprintf("the old supervisor %d is still draining", d.oldPID)
	case time.Now().Before(d.failedUpgradeUntil):
		return "the workers of the failed binary upgrade may still hold the pool's sockets"
	case sig == syscall.SIGTTIN && d.src.steer.g.Held() > 0:
		return "a retired worker's socket is still held by another process"
	}
	if err := d.src.steer.g.Verify(); err != nil {
		return err.Error()
	}
	return ""
}

// refuse reports that the request sig stands for is refused, and why;
// newPid is the binary upgrade's new supervisor it concerns, if any.
func (d *dispatcher) refuse(sig os.Signal, why string, newPid int) {
	d.sup.Report(supervisor.Event{Kind: supervisor.EventRefused, Reason: signame.Of(sig) + ": " + why, Pid: newPid})
}

func (d *dispatcher) startUpgrade() {
	log := d.o.Logger
	switch {
	case d.stopping:
		d.refuse(syscall.SIGUSR2, "binary upgrade: the pool is stopping", 0)
		return
	case d.pending != nil:
		d.refuse(syscall.SIGUSR2, "binary upgrade: one is already under way", d.pending.cmd.Process.Pid)
		return
	}
	var group []*sockets.Socket
	if d.src.steer != nil {
		// A barrier: TTIN and TTOU sent just before are carried out (the
		// supervisor handles commands in order) before the hand-over.
		d.sup.Workers()
		var busy string
		if group, busy = d.src.steer.handOver(); busy != "" {
			d.refuse(syscall.SIGUSR2, "binary upgrade: "+busy, 0)
			return
		}
	}
	s, err := startSuccessor(d.src, group, d.own, d.upgrades)
	if err != nil {
		log.Error("binary upgrade failed: cannot start a new supervisor", "err", err.Error())
		d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "failed: cannot start a new supervisor: " + err.Error()})
		if d.src.steer != nil {
			d.src.steer.resume()
		}
		return
	}
	d.pending = s
	log.Info("binary upgrade: new supervisor started", "new_pid", s.cmd.Process.Pid)
	d.sup.Report(supervisor.Event{Kind: supervisor.EventUpgrade, Reason: "begin", Pid: s.cmd.Process.Pid})
}

// abandonUpgrade stops a new supervisor that was not ready when this one
// stopped, and waits (bounded) until it has exited.
func (d *dispatcher) abandonUpgrade() {
	if d.pending == nil {
		return
	}
	pid := d.pending.cmd.Process.Pid
	d.o.Logger.Warn("stopping the unfinished binary upgrade", "new_pid", pid)
	_ = d.pending.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.upgrades:
	case <-time.After(d.o.ShutdownTimeout + 2*time.Second):
		_ = d.pending.cmd.Process.Kill()
		<-d.upgrades
	}
}

// logWorkers logs one line per live worker (SIGUSR1).
func (d *dispatcher) logWorkers() {
	ws := d.sup.Workers()
	d.o.Logger.Info("worker table", "workers", len(ws))
	for _, w := range ws {
		d.o.Logger.Info("worker", "worker", w.ID, "slot", w.Slot, "generation", w.Generation, "pid", w.Pid,
			"state", string(w.State), "uptime", time.Since(w.Started).Round(time.Millisecond))
	}
}

// poolHooks passes the supervisor's changes to those that follow them: the
// steered group, systemd and a binary upgrade's handshake.
type poolHooks struct {
	steer *steering // nil unless migration cbpf
	heir  *upgradeRole
	sd    *systemd
}

func (h *poolHooks) WorkerReady(w supervisor.Worker) {
	if h.steer != nil {
		h.steer.ready(w)
	}
}

func (h *poolHooks) WorkerStopping(w supervisor.Worker) {
	if h.steer != nil {
		h.steer.stopping(w)
	}
}

func (h *poolHooks) WorkerExited(w supervisor.Worker) {
	if h.steer != nil {
		h.steer.exited(w)
	}
}

func (h *poolHooks) SlotLeaving(slot int) <-chan struct{} {
	if h.steer != nil {
		return h.steer.release(slot)
	}
	return nil
}

func (h *poolHooks) PoolReady(n int) {
	if h.steer != nil {
		h.steer.poolReady()
	}
	h.heir.ready()
	h.sd.poolReady(n)
}

func (h *poolHooks) Restart(phase string) { h.sd.restart(phase) }

func (h *poolHooks) PoolStopping(reason string) {
	if h.steer != nil {
		h.steer.poolStopping()
	}
	h.sd.stopping(reason)
}
