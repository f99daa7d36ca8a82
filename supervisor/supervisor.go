// Package supervisor starts, watches, restarts and signals a pool of worker
// processes. It knows nothing of HTTP or sockets: it talks to the operating
// system only through a [Spawner] and the [Process] values it returns, so its
// logic is tested with fake processes.
//
// One goroutine (the one running [Supervisor.Run]) owns all state; one
// goroutine per child forwards that child's messages and exit to it. Nothing
// started by Run outlives Run.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Config configures a [Supervisor]. The zero value of every field but Spawner
// is valid.
type Config struct {
	// Spawner starts worker processes. Required.
	Spawner Spawner
	// Workers is the initial number of workers. 0 means 1.
	Workers int
	// StopTimeout is how long a worker asked to stop gracefully may take
	// before it is killed. 0 means 1s.
	StopTimeout time.Duration
	// HeartbeatTimeout: a worker that reports nothing (ready or heartbeat) for
	// this long is killed and replaced. 0 means never.
	HeartbeatTimeout time.Duration
	// MaxStartFailures is how many workers in a row may exit before they
	// become ready before Run gives up with a *StartError, if no worker
	// serves; while others serve, the pool is degraded instead (an
	// EventDegraded) and keeps trying at the backoff. 0 means 5.
	MaxStartFailures int
	// BackoffBase is the refork delay after the second young death in a row;
	// it doubles with each further one. 0 means 100ms.
	BackoffBase time.Duration
	// BackoffMax caps the refork delay. 0 means 10s.
	BackoffMax time.Duration
	// YoungAge: a worker that dies before it is ready, or within this long of
	// being forked, died young. Young deaths back off; a death at an older age
	// resets the backoff. 0 means 1s.
	YoungAge time.Duration
	// Surge is how many replacement workers a rolling restart starts at once.
	// 0 means 1.
	Surge int
	// Logger receives one record per event. nil means slog.Default().
	Logger *slog.Logger
	// OnEvent, if set, is called for every event, on the goroutine running
	// Run, after the event is logged. It must not block or call the
	// Supervisor's methods.
	OnEvent func(Event)
	// Hooks, if set, is told of the pool's changes as they happen (see
	// [Hooks]); a slot leaving the pool waits for it.
	Hooks Hooks
}

// Supervisor runs a pool of workers. Create it with [New]; its methods are
// safe for concurrent use.
type Supervisor struct {
	cfg    Config
	cmds   chan command
	events chan childEvent
	done   chan struct{}
}

// New returns a Supervisor for cfg with defaults applied, or an error naming
// the first invalid field.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Spawner == nil {
		return nil, errors.New("supervisor: Config.Spawner is nil")
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Workers", int64(cfg.Workers)}, {"StopTimeout", int64(cfg.StopTimeout)},
		{"HeartbeatTimeout", int64(cfg.HeartbeatTimeout)}, {"MaxStartFailures", int64(cfg.MaxStartFailures)},
		{"BackoffBase", int64(cfg.BackoffBase)}, {"BackoffMax", int64(cfg.BackoffMax)},
		{"YoungAge", int64(cfg.YoungAge)}, {"Surge", int64(cfg.Surge)},
	} {
		if f.v < 0 {
			return nil, fmt.Errorf("supervisor: Config.%s is negative (%d)", f.name, f.v)
		}
	}
	setDefault(&cfg.Workers, 1)
	setDefault(&cfg.StopTimeout, time.Second)
	setDefault(&cfg.MaxStartFailures, 5)
	setDefault(&cfg.BackoffBase, 100*time.Millisecond)
	setDefault(&cfg.BackoffMax, 10*time.Second)
	setDefault(&cfg.YoungAge, time.Second)
	setDefault(&cfg.Surge, 1)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Supervisor{
		cfg:    cfg,
		cmds:   make(chan command),
		events: make(chan childEvent),
		done:   make(chan struct{}),
	}, nil
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

type commandKind int

const (
	cmdAdd commandKind = iota
	cmdRetire
	cmdStop
	cmdKill
	cmdRestart
	cmdList
	cmdReport
)

type command struct {
	kind  commandKind
	reply chan []Worker // for cmdList
	ev    Event         // for cmdReport
}

// send delivers c to Run's loop; it reports false if Run is not running.
func (s *Supervisor) send(c command) bool {
	select {
	case s.cmds <- c:
		return true
	case <-s.done:
		return false
	}
}

// Add forks one more worker. It reports false if Run has returned.
func (s *Supervisor) Add() bool { return s.send(command{kind: cmdAdd}) }

// Retire gracefully stops the oldest worker and shrinks the pool by one. It
// is refused (an [EventRefused]) when one worker is left.
func (s *Supervisor) Retire() bool { return s.send(command{kind: cmdRetire}) }

// Stop begins a graceful stop: every worker is sent SIGTERM and given
// StopTimeout before it is killed. Run returns when all have exited.
func (s *Supervisor) Stop() bool { return s.send(command{kind: cmdStop}) }

// Kill kills every worker at once with SIGKILL; Run returns [ErrKilled].
func (s *Supervisor) Kill() bool { return s.send(command{kind: cmdKill}) }

// Restart begins a rolling restart: each worker is replaced by a new one
// (Surge at a time), the old one stopping only once its replacement is ready.
func (s *Supervisor) Restart() bool { return s.send(command{kind: cmdRestart}) }

// Report logs ev and passes it to Config.OnEvent on Run's goroutine, in
// order with the pool's own events: for events that the program driving the
// supervisor originates (a refusal of its own, a binary upgrade). It reports
// false if Run has returned.
func (s *Supervisor) Report(ev Event) bool { return s.send(command{kind: cmdReport, ev: ev}) }

// Workers returns the live workers ordered by ID, or nil if Run has returned.
func (s *Supervisor) Workers() []Worker {
	c := command{kind: cmdList, reply: make(chan []Worker, 1)}
	if !s.send(c) {
		return nil
	}
	return <-c.reply
}

// childEvent is what a child's goroutine or a timer reports to the loop.
type childEvent struct {
	id   int
	msg  *Message  // a message, or
	exit *Exit     // the exit, or
	fire timerKind // a timer firing
	slot int       // for timerRefork
}

type timerKind int

const (
	timerNone timerKind = iota
	timerStopDeadline
	timerRefork
	timerDrained // a draining worker's slot has drained
)

type worker struct {
	Worker
	proc       Process
	lastSeen   time.Time // last message
	killReason string    // set when we SIGKILL it
	replaces   int       // ID of the worker this one replaces, or 0
	failure    string    // what it reported in a Failed message
	stopTimer  *time.Timer
}

// loop is the state owned by Run's goroutine.
type loop struct {
	s     *Supervisor
	log   *slog.Logger
	hooks Hooks
	wg    sync.WaitGroup // drain waiters

	nextID   int
	gen      int
	slots    map[int]bool // slots that should have a worker
	workers  map[int]*worker
	reforks  map[int]*time.Timer // slot → pending refork
	children int                 // child goroutines not yet finished

	startFailures int  // consecutive exits before ready
	degraded      bool // MaxStartFailures reached while other workers serve
	crashes       int  // consecutive young deaths
	announced     bool // EventPoolReady sent for the current target

	restarting bool  // a rolling restart is under way
	rolling    []int // IDs of old workers it still has to replace
	inFlight   int   // replacements started and not yet ready

	stopping bool
	result   error
	timeouts []int // pids killed at the stop deadline
}

// Run starts the workers and supervises them until ctx is done (a graceful
// stop), [Supervisor.Stop] or [Supervisor.Kill] is called, or workers keep
// failing to start. It returns nil after a graceful stop in which every
// worker exited in time. Run may be called once.
func (s *Supervisor) Run(ctx context.Context) error {
	l := &loop{
		s:       s,
		log:     s.cfg.Logger,
		hooks:   s.cfg.Hooks,
		slots:   make(map[int]bool),
		workers: make(map[int]*worker),
		reforks: make(map[int]*time.Timer),
	}
	if l.hooks == nil {
		l.hooks = noHooks{}
	}
	defer func() {
		close(s.done)
		l.wg.Wait()
	}()
	var beat <-chan time.Time
	if hb := s.cfg.HeartbeatTimeout; hb > 0 {
		t := time.NewTicker(max(hb/4, time.Millisecond))
		defer t.Stop()
		beat = t.C
	}
	for i := range s.cfg.Workers {
		l.slots[i] = true
		l.spawn(i, 0)
		if l.stopping {
			break
		}
	}
	ctxDone := ctx.Done()
	for !(l.stopping && l.children == 0) {
		select {
		case <-ctxDone:
			ctxDone = nil
			l.stop(false, "context done")
		case c := <-s.cmds:
			l.command(c)
		case ev := <-s.events:
			l.event(ev)
		case <-beat:
			l.checkHeartbeats()
		}
	}
	for _, t := range l.reforks {
		t.Stop()
	}
	if l.result == nil && len(l.timeouts) > 0 {
		l.result = &StopTimeoutError{Timeout: s.cfg.StopTimeout, Pids: l.timeouts}
	}
	return l.result
}

func (l *loop) emit(ev Event) {
	level, msg, attrs := describe(ev)
	l.log.Log(context.Background(), level, msg, attrs...)
	if l.s.cfg.OnEvent != nil {
		l.s.cfg.OnEvent(ev)
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
			ws = append(ws, w.Worker)
		}
		slices.SortFunc(ws, func(a, b Worker) int { return a.ID - b.ID })
		c.reply <- ws
	case cmdReport:
		l.emit(c.ev)
	case cmdStop:
		l.stop(false, "requested")
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
	var oldest *worker
	for _, w := range l.workers {
		if !w.leaving() && (oldest == nil || w.ID < oldest.ID) {
			oldest = w
		}
	}
	if oldest == nil { // only pending reforks: drop the highest one
		slot := maxKey(l.reforks)
		l.reforks[slot].Stop()
		delete(l.reforks, slot)
		l.release(slot)
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
		l.gracefulStop(w, "retired")
		return
	}
	w.State = Draining
	l.emit(Event{Kind: EventDrain, Worker: w.Worker, Reason: "retired"})
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
	if l.inFlight == 0 && len(l.rolling) == 0 {
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
	for _, w := range l.sorted() {
		if immediate {
			l.kill(w, "immediate stop")
		} else if w.State != Stopping {
			l.gracefulStop(w, "pool stopping")
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
		if w, ok := l.workers[ev.id]; ok && w.State == Draining {
			l.gracefulStop(w, "retired")
		}
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
}

func (l *loop) message(w *worker, m Message) {
	w.lastSeen = time.Now()
	switch m.Kind {
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
				l.gracefulStop(old, "replaced")
			}
			if l.restarting {
				l.roll()
				return
			}
		}
		l.checkPoolReady()
	case MessageFailed:
		w.failure = m.Text
	case MessageInvalid:
		w.failure = "protocol violation: " + m.Text
		l.kill(w, w.failure)
	case MessageRetiring:
		if l.stopping || w.State != Ready || l.busy() != "" {
			return
		}
		for _, o := range l.workers {
			if o.replaces == w.ID {
				return // already being replaced
			}
		}
		l.log.Info("worker asks to be replaced", "worker", w.ID, "pid", w.Pid, "reason", m.Text)
		l.inFlight++
		l.spawn(w.Slot, w.ID)
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

func (l *loop) exited(w *worker, e Exit) {
	delete(l.workers, w.ID)
	l.children--
	if w.stopTimer != nil {
		w.stopTimer.Stop()
	}
	l.hooks.WorkerExited(w.Worker)
	if w.leaving() || l.stopping {
		l.emit(Event{Kind: EventExit, Worker: w.Worker, Exit: e})
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
			l.kill(w, fmt.Sprintf("no heartbeat for %v", limit))
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
