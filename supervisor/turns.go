package supervisor

// Workers leaving a pool whose listeners live on (a rolling restart's old
// workers, a retirement, a recycling, the pool's stop after a binary
// upgrade) are asked to stop one at a time. Each worker of a reuseport
// pool may own its listener; when one closes, the kernel migrates the
// connections queued on it to another listener of the group, and if that
// one is closing too and stops listening first, the kernel resets them
// (Linux's TCPMigrateReqFailure). So a worker is asked to stop only once
// the one asked before it has reported its listener closed
// (MessageClosed), or exited, or CloseWait has passed. A stop of the pool
// that nothing outlives (Stop, StopFor) asks every worker at once.

// requestStop asks w to stop now, or, while another worker asked to stop
// may still have its listener open, queues w (still serving) for its
// turn.
func (l *loop) requestStop(w *worker, why string) {
	if l.stopping && !l.inTurn {
		l.gracefulStop(w, why)
		return
	}
	if l.closing != 0 {
		if w.turnWhy == "" {
			w.turnWhy = why
			l.turns = append(l.turns, w.ID)
		}
		return
	}
	l.gracefulStop(w, why)
	l.closing = w.ID
	l.closeTimer = l.after(CloseWait, childEvent{id: w.ID, fire: timerCloseWait})
}

// The causes of a turn's end: the closing worker reported its listener
// closed, it exited, or CloseWait passed without either (the next worker
// is asked to stop anyway).
const (
	turnClosed = "closed"
	turnExited = "exited"
	turnWaited = "CloseWait passed"
)

// turnOver ends worker id's turn if it is the one closing, for cause: the
// next worker waiting its turn is asked to stop.
func (l *loop) turnOver(id int, cause string) {
	if id == 0 || id != l.closing {
		return
	}
	l.closeTimer.Stop()
	l.closing, l.closeTimer = 0, nil
	l.log.Debug("leaving worker's turn to stop over", "worker", id, "cause", cause, "wait", CloseWait, "waiting", len(l.turns))
	for len(l.turns) > 0 {
		w, ok := l.workers[l.turns[0]]
		l.turns = l.turns[1:]
		if ok && w.turnWhy != "" && w.killReason == "" {
			why := w.turnWhy
			w.turnWhy = ""
			l.requestStop(w, why)
			break
		}
	}
	if l.restarting && len(l.turns) == 0 {
		l.roll() // it may be done now
	}
}

// clearTurns forgets the stops in turn: the workers waiting theirs are
// not asked to stop by it (the caller stops them).
func (l *loop) clearTurns() {
	if l.closeTimer != nil {
		l.closeTimer.Stop()
	}
	l.closing, l.closeTimer = 0, nil
	for _, id := range l.turns {
		if w, ok := l.workers[id]; ok {
			w.turnWhy = ""
		}
	}
	l.turns = nil
}
