package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// emit logs ev and passes it to Config.OnEvent, or, while the loop holds
// its events (see holdEvents), queues it.
func (l *loop) emit(ev Event) {
	if l.holding {
		l.held = append(l.held, ev)
		return
	}
	level, msg, attrs := describe(ev)
	l.log.Log(context.Background(), level, msg, attrs...)
	if l.s.cfg.OnEvent != nil {
		l.s.cfg.OnEvent(ev)
	}
}

// holdEvents queues the events emitted until releaseEvents, which emits
// them in order. A worker's exit holds them until its re-fork has been
// started: logging (a write to stderr, which may be a slow pipe) and
// Config.OnEvent are then not on the path from a death to serving again.
// Hooks are not held: each still runs before its event is emitted.
func (l *loop) holdEvents() { l.holding = true }

// releaseEvents emits the held events, if any, and stops holding.
func (l *loop) releaseEvents() {
	l.holding = false
	held := l.held
	l.held = nil
	for _, ev := range held {
		l.emit(ev)
	}
}

// describe returns the log record of ev.
func describe(ev Event) (slog.Level, string, []any) {
	attrs := []any{"event", string(ev.Kind)}
	if ev.Worker.ID != 0 {
		attrs = append(attrs, "worker", ev.Worker.ID, "slot", ev.Worker.Slot, "generation", ev.Worker.Generation, "pid", ev.Worker.Pid)
	}
	level := slog.LevelInfo
	msg := "worker " + string(ev.Kind)
	switch ev.Kind {
	case EventExit:
		attrs = append(attrs, "status", ev.Exit.String(), "uptime", time.Since(ev.Worker.Started).Round(time.Millisecond))
		if ev.Exit.Stderr != "" {
			attrs = append(attrs, "stderr", ev.Exit.Stderr)
		}
		if ev.Reason != "" {
			level = slog.LevelWarn
			msg = "worker exited unexpectedly"
		}
	case EventRefork:
		attrs = append(attrs, "slot", ev.Worker.Slot, "delay", ev.Delay)
	case EventKill:
		level = slog.LevelWarn
	case EventRefused:
		level, msg = slog.LevelWarn, "request refused"
	case EventDegraded:
		level, msg = slog.LevelError, "pool degraded: workers fail to start while others serve"
	case EventRecovered:
		msg = "pool recovered: a worker started again"
	case EventUpgrade:
		msg = "binary upgrade"
	case EventPoolReady:
		msg = "all workers ready"
		attrs = append(attrs, "workers", ev.Pool)
	case EventRestart:
		msg = "rolling restart"
	case EventStopping:
		msg = "pool stopping"
	case EventStuck:
		level, msg = slog.LevelError, "worker stuck: replacing it"
	case EventMemory:
		level, msg = slog.LevelWarn, "worker over its memory limit: replacing it"
	}
	if ev.Pid != 0 {
		attrs = append(attrs, "new_pid", ev.Pid)
	}
	if ev.Reason != "" {
		attrs = append(attrs, "reason", ev.Reason)
	}
	return level, msg, attrs
}

// spawn forks a worker for slot; replaces is the ID of a worker it replaces.
func (l *loop) spawn(slot, replaces int) *worker {
	l.nextID++
	w := &worker{Worker: Worker{ID: l.nextID, Slot: slot, Generation: l.gen, State: Starting}, replaces: replaces}
	p, err := l.s.cfg.Spawner.Spawn(w.Worker)
	if err != nil {
		l.log.Error("cannot fork worker", "slot", slot, "err", err.Error())
		l.startFailed(slot, replaces, fmt.Sprintf("fork: %v", err))
		return nil
	}
	w.proc = p
	w.Pid = p.Pid()
	w.Started = time.Now()
	w.lastSeen = w.Started
	l.workers[w.ID] = w
	l.children++
	go l.s.watch(w.ID, p)
	l.emit(Event{Kind: EventSpawn, Worker: w.Worker})
	return w
}

// watch forwards p's messages and then its exit to the loop.
func (s *Supervisor) watch(id int, p Process) {
	for m := range p.Messages() {
		s.events <- childEvent{id: id, msg: &m}
	}
	e := p.Wait()
	s.events <- childEvent{id: id, exit: &e}
}

// after arranges for ev to reach the loop after d, unless the timer is
// stopped or Run has returned.
func (l *loop) after(d time.Duration, ev childEvent) *time.Timer {
	return time.AfterFunc(d, func() {
		select {
		case l.s.events <- ev:
		case <-l.s.done:
		}
	})
}

func (l *loop) command(c command) {
	switch c.kind {
	case cmdList:
		ws := make([]Worker, 0, len(l.workers))
		for _, w := range l.workers {
			w.LastSeen, w.Served, w.InFlight = w.lastSeen, w.served, w.inFlight
			ws = append(ws, w.Worker)
		}
		slices.SortFunc(ws, func(a, b Worker) int { return a.ID - b.ID })
		c.reply <- Snapshot{Workers: ws, Desired: len(l.slots), Rolling: l.restarting, Degraded: l.degraded, Stopping: l.stopping}
	case cmdReport:
		l.emit(c.ev)
	case cmdStop:
		why := c.why
		if why == "" {
			why = "requested"
		}
		if !l.stopping {
			l.inTurn = c.inTurn
		}
		l.stop(false, why)
	case cmdKill:
		l.stop(true, "requested")
	case cmdAdd:
		if reason := l.busy(); reason != "" {
			l.emit(Event{Kind: EventRefused, Reason: "add worker: " + reason})
			return
		}
		slot := 0
		for l.slots[slot] {
			slot++
		}
		l.slots[slot] = true
		l.announced = false
		l.spawn(slot, 0)
	case cmdRetire:
		l.retireOldest()
	case cmdRestart:
		l.restart()
	}
}

// retireOldest takes the oldest worker's slot out of the pool, or refuses.
func (l *loop) retireOldest() {
	if reason := l.busy(); reason != "" {
		l.emit(Event{Kind: EventRefused, Reason: "retire worker: " + reason})
		return
	}
	if len(l.slots) <= 1 {
		l.emit(Event{Kind: EventRefused, Reason: "retire worker: the pool keeps at least one worker"})
		return
	}
	if len(l.reforks) > 0 {
		// A slot waiting for its re-fork serves nothing: drop it first,
		// rather than a worker that serves.
		slot := maxKey(l.reforks)
		l.reforks[slot].Stop()
		delete(l.reforks, slot)
		l.release(slot)
		l.emit(Event{Kind: EventStop, Worker: Worker{Slot: slot}, Reason: ReasonRetired})
		return
	}
	var oldest *worker
	for _, w := range l.workers {
		if !w.leaving() && (oldest == nil || w.ID < oldest.ID) {
			oldest = w
		}
	}
	if oldest == nil {
		l.emit(Event{Kind: EventRefused, Reason: "retire worker: every worker is already leaving"})
		return
	}
	l.retire(oldest)
}

// restart begins a rolling restart, or refuses.
func (l *loop) restart() {
	if reason := l.busy(); reason != "" {
		l.emit(Event{Kind: EventRefused, Reason: "rolling restart: " + reason})
		return
	}
	l.gen++
	l.restarting = true
	for _, w := range l.workers {
		if !w.leaving() {
			l.rolling = append(l.rolling, w.ID)
		}
	}
	slices.Sort(l.rolling)
	l.hooks.Restart("begin")
	l.emit(Event{Kind: EventRestart, Reason: "begin"})
	l.announced = false
	l.roll()
}

// release takes slot out of the pool and tells the hooks; the returned
// channel is closed once the slot has drained (nil: it has).
func (l *loop) release(slot int) <-chan struct{} {
	delete(l.slots, slot)
	return l.hooks.SlotLeaving(slot)
}

// retire takes w's slot out of the pool and stops w once the slot has
// drained; meanwhile w is Draining.
func (l *loop) retire(w *worker) {
	drained := l.release(w.Slot)
	if drained == nil {
		l.requestStop(w, ReasonRetired)
		return
	}
	w.State = Draining
	l.emit(Event{Kind: EventDrain, Worker: w.Worker, Reason: ReasonRetired})
	ev := childEvent{id: w.ID, fire: timerDrained}
	l.wg.Go(func() {
		select {
		case <-drained:
		case <-l.s.done:
			return
		}
		select {
		case l.s.events <- ev:
		case <-l.s.done:
		}
	})
}

func maxKey[V any](m map[int]V) int {
	k := -1
	for s := range m {
		k = max(k, s)
	}
	return k
}

// busy says why the pool cannot change shape now, or "".
func (l *loop) busy() string {
	switch {
	case l.stopping:
		return "the pool is stopping"
	case l.restarting:
		return "a rolling restart is in progress"
	case l.inFlight > 0:
		return "a worker is being replaced"
	}
	return ""
}

// roll starts replacements until Surge are in flight or none are left.
func (l *loop) roll() {
	for l.inFlight < l.s.cfg.Surge && len(l.rolling) > 0 {
		old, ok := l.workers[l.rolling[0]]
		l.rolling = l.rolling[1:]
		if !ok || old.leaving() {
			continue
		}
		l.inFlight++
		if l.spawn(old.Slot, old.ID) == nil {
			return
		}
	}
	// Done once every old worker has been asked to stop: none waits its
	// turn (see requestStop).
	if l.inFlight == 0 && len(l.rolling) == 0 && len(l.turns) == 0 {
		l.restarting = false
		l.hooks.Restart("done")
		l.emit(Event{Kind: EventRestart, Reason: "done"})
		l.checkPoolReady()
	}
}

func (l *loop) abortRoll(reason string) {
	l.rolling = nil
	l.restarting = false
	l.hooks.Restart("aborted: " + reason)
	l.emit(Event{Kind: EventRestart, Reason: "aborted: " + reason})
	l.checkPoolReady()
}

// stop begins stopping the pool: gracefully (SIGTERM, then SIGKILL after
// StopTimeout) or at once (SIGKILL).
func (l *loop) stop(immediate bool, why string) {
	if l.stopping && !immediate {
		return
	}
	mode := "graceful"
	if immediate {
		mode = "immediate"
	}
	l.hooks.PoolStopping(mode + ": " + why)
	l.emit(Event{Kind: EventStopping, Reason: mode + ": " + why})
	l.stopping = true
	l.restarting = false
	l.rolling = nil
	for slot, t := range l.reforks {
		t.Stop()
		delete(l.reforks, slot)
	}
	if immediate || !l.inTurn {
		l.clearTurns() // nothing outlives the pool: no worker waits its turn
	}
	for _, w := range l.sorted() {
		switch {
		case immediate:
			l.kill(w, "immediate stop")
		case w.State == Stopping, w.turnWhy != "":
		default:
			l.requestStop(w, ReasonPoolStopping)
		}
	}
	if immediate && l.result == nil {
		l.result = ErrKilled
	}
}

func (l *loop) sorted() []*worker {
	ws := make([]*worker, 0, len(l.workers))
	for _, w := range l.workers {
		ws = append(ws, w)
	}
	slices.SortFunc(ws, func(a, b *worker) int { return a.ID - b.ID })
	return ws
}

// gracefulStop asks w to stop; the stop timeout runs from now.
func (l *loop) gracefulStop(w *worker, why string) {
	w.State = Stopping
	w.turnWhy = ""
	l.hooks.WorkerStopping(w.Worker)
	l.emit(Event{Kind: EventStop, Worker: w.Worker, Reason: why})
	_ = w.proc.Stop()
	w.stopTimer = l.after(l.s.cfg.StopTimeout, childEvent{id: w.ID, fire: timerStopDeadline})
}

func (l *loop) kill(w *worker, why string) {
	if w.killReason != "" {
		return
	}
	w.killReason = why
	l.hooks.WorkerStopping(w.Worker)
	l.emit(Event{Kind: EventKill, Worker: w.Worker, Reason: why})
	_ = w.proc.Kill()
}

func (l *loop) event(ev childEvent) {
	switch ev.fire {
	case timerRefork:
		delete(l.reforks, ev.slot)
		if !l.stopping && l.slots[ev.slot] {
			l.spawn(ev.slot, 0)
		}
		return
	case timerDrained:
		if w, ok := l.workers[ev.id]; ok && w.State == Draining && w.turnWhy == "" {
			l.requestStop(w, ReasonRetired)
		}
		return
	case timerCloseWait:
		l.turnOver(ev.id, turnWaited)
		return
	case timerStopDeadline:
		if w, ok := l.workers[ev.id]; ok {
			if l.stopping {
				l.timeouts = append(l.timeouts, w.Pid)
			}
			l.kill(w, fmt.Sprintf("still running %v after SIGTERM", l.s.cfg.StopTimeout))
		}
		return
	}
	w, ok := l.workers[ev.id]
	if !ok {
		return
	}
	if ev.msg != nil {
		l.message(w, *ev.msg)
		return
	}
	l.exited(w, *ev.exit)
	l.turns = slices.DeleteFunc(l.turns, func(id int) bool { return id == w.ID })
	l.turnOver(w.ID, turnExited)
}

func (l *loop) message(w *worker, m Message) {
	w.lastSeen = time.Now()
	switch m.Kind {
	case MessageHeartbeat:
		w.served, w.inFlight = m.Served, m.InFlight
	case MessageReady:
		if w.State != Starting {
			return
		}
		w.State = Ready
		l.startFailures = 0
		l.hooks.WorkerReady(w.Worker)
		l.emit(Event{Kind: EventReady, Worker: w.Worker})
		if l.degraded {
			l.degraded = false
			l.emit(Event{Kind: EventRecovered, Worker: w.Worker})
		}
		if w.replaces != 0 {
			l.inFlight--
			if old, ok := l.workers[w.replaces]; ok && !old.leaving() {
				why := ReasonReplaced
				if w.replaceWhy != "" {
					why = w.replaceWhy
				}
				l.requestStop(old, why)
			}
			if l.restarting {
				l.roll()
				return
			}
		}
		l.checkPoolReady()
	case MessageClosed:
		l.turnOver(w.ID, turnClosed)
	case MessageFailed:
		w.failure = m.Text
	case MessageInvalid:
		w.failure = ReasonProtocol + ": " + m.Text
		l.kill(w, w.failure)
	case MessageRetiring, MessageStuck, MessageMemory:
		l.replaceOnRequest(w, m)
	}
}

// replaceOnRequest starts a replacement for w, which asks for one (its
// MaxRequests, or its guards: stuck, memory); w is stopped once the
// replacement is ready. Not now if the pool is busy: w asks again at its
// next heartbeat.
func (l *loop) replaceOnRequest(w *worker, m Message) {
	if l.stopping || w.State != Ready || w.leaving() || l.busy() != "" {
		return
	}
	for _, o := range l.workers {
		if o.replaces == w.ID {
			return // already being replaced
		}
	}
	why := ""
	switch m.Kind {
	case MessageStuck:
		why = ReasonStuck
		l.emit(Event{Kind: EventStuck, Worker: w.Worker, Reason: m.Text})
	case MessageMemory:
		why = ReasonMemory
		l.emit(Event{Kind: EventMemory, Worker: w.Worker, Reason: m.Text})
	default:
		l.log.Info("worker asks to be replaced", "worker", w.ID, "pid", w.Pid, "reason", m.Text)
	}
	l.inFlight++
	if nw := l.spawn(w.Slot, w.ID); nw != nil {
		nw.replaceWhy = why
	}
}

// checkPoolReady emits EventPoolReady once every slot has a ready worker.
func (l *loop) checkPoolReady() {
	if l.announced || l.stopping || l.restarting || l.inFlight > 0 {
		return
	}
	if l.serving() >= len(l.slots) {
		l.announced = true
		l.hooks.PoolReady(len(l.slots))
		l.emit(Event{Kind: EventPoolReady, Pool: len(l.slots)})
	}
}
