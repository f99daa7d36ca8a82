package supervisor

import (
	"fmt"
	"time"
)

// exited handles w's exit: a re-fork, if any, starts before the events are
// emitted (see holdEvents).
func (l *loop) exited(w *worker, e Exit) {
	l.holdEvents()
	defer l.releaseEvents()
	delete(l.workers, w.ID)
	l.children--
	if w.stopTimer != nil {
		w.stopTimer.Stop()
	}
	l.hooks.WorkerExited(w.Worker)
	if w.leaving() || l.stopping {
		// Nothing to re-fork; but one that exits while it waits its
		// turn to be asked to stop was not asked.
		l.emit(Event{Kind: EventExit, Worker: w.Worker, Exit: e, Reason: unaskedExit(w)})
		return
	}
	reason := "unexpected exit"
	if w.killReason != "" {
		reason = "killed: " + w.killReason
	}
	if w.State == Starting {
		reason = "exited before ready"
	}
	l.emit(Event{Kind: EventExit, Worker: w.Worker, Exit: e, Reason: reason})
	if w.State == Starting {
		detail := e.String()
		switch {
		case w.failure != "":
			detail = w.failure + " (" + detail + ")"
		case e.Stderr != "":
			detail = e.Stderr + " (" + detail + ")"
		}
		l.startFailed(w.Slot, w.replaces, detail)
		return
	}
	if l.replacing(w.ID) {
		return // its replacement is on the way
	}
	young := time.Since(w.Started) < l.s.cfg.YoungAge
	l.refork(w.Slot, young)
}

// unaskedExit is the Reason of the exit of a leaving worker: "" if it was
// asked to stop (or killed by the pool's stop), else why it ended.
func unaskedExit(w *worker) string {
	switch {
	case w.turnWhy == "":
		return ""
	case w.killReason != "":
		return "killed: " + w.killReason
	}
	return "exited while waiting its turn to stop"
}

// replacing reports whether a live worker replaces the worker id.
func (l *loop) replacing(id int) bool {
	for _, o := range l.workers {
		if o.replaces == id {
			return true
		}
	}
	return false
}

// startFailed handles a worker for slot that died (or could not be forked)
// before it was ready.
func (l *loop) startFailed(slot, replaces int, detail string) {
	if replaces != 0 {
		l.inFlight--
		if l.restarting && !l.stopping {
			l.abortRoll("a new worker failed to start: " + detail)
		}
		if _, alive := l.workers[replaces]; alive {
			return // the old worker keeps serving
		}
	}
	if l.stopping {
		return
	}
	l.startFailures++
	if l.startFailures >= l.s.cfg.MaxStartFailures {
		if l.serving() == 0 {
			l.result = &StartError{Failures: l.startFailures, Reason: detail}
			l.stop(false, "workers fail to start")
			return
		}
		if !l.degraded {
			// Others serve: keep them, and keep trying at the backoff.
			l.degraded = true
			l.emit(Event{Kind: EventDegraded, Reason: fmt.Sprintf("%d workers in a row exited before becoming ready; last: %s; %d of %d slots serve",
				l.startFailures, detail, l.serving(), len(l.slots))})
		}
	}
	l.refork(slot, true)
}

// serving returns the number of ready workers.
func (l *loop) serving() int {
	n := 0
	for _, w := range l.workers {
		if w.State == Ready {
			n++
		}
	}
	return n
}

// refork schedules slot to be forked again, at once or after a backoff.
func (l *loop) refork(slot int, young bool) {
	if !l.slots[slot] {
		return
	}
	if young {
		l.crashes++
	} else {
		l.crashes = 0
	}
	var delay time.Duration
	if l.crashes > 1 {
		delay = min(l.s.cfg.BackoffBase<<min(l.crashes-2, 30), l.s.cfg.BackoffMax)
	}
	l.emit(Event{Kind: EventRefork, Worker: Worker{Slot: slot}, Delay: delay})
	if delay == 0 {
		l.spawn(slot, 0)
		return
	}
	l.reforks[slot] = l.after(delay, childEvent{fire: timerRefork, slot: slot})
}

// checkHeartbeats kills workers that have been silent too long.
func (l *loop) checkHeartbeats() {
	limit := l.s.cfg.HeartbeatTimeout
	for _, w := range l.sorted() {
		if w.State != Stopping && time.Since(w.lastSeen) > limit {
			l.kill(w, fmt.Sprintf("%s for %v", ReasonNoHeartbeat, limit))
		}
	}
}

// noHooks is the Hooks of a Config without any.
type noHooks struct{}

func (noHooks) WorkerReady(Worker)                   {}
func (noHooks) WorkerStopping(Worker)                {}
func (noHooks) WorkerExited(Worker)                  {}
func (noHooks) SlotLeaving(slot int) <-chan struct{} { return nil }
func (noHooks) PoolReady(n int)                      {}
func (noHooks) Restart(phase string)                 {}
func (noHooks) PoolStopping(reason string)           {}
