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
	// Supervisor's methods. A worker's exit and its re-fork are logged and
	// passed on after the replacement has been spawned, so that neither is
	// on the path from a death to serving again.
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
	reply chan Snapshot // for cmdList
	ev    Event         // for cmdReport
	why   string        // for cmdStop: the reason EventStopping gives ("" is "requested")
	// inTurn: for cmdStop, the workers are asked to stop one at a time
	// (StopInTurn).
	inTurn bool
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

// StopFor is Stop with the reason EventStopping gives ("graceful: why").
func (s *Supervisor) StopFor(why string) bool { return s.send(command{kind: cmdStop, why: why}) }

// StopInTurn is StopFor for a pool whose workers' listeners belong to a
// group that lives on after it (a binary upgrade's new pool keeps serving
// on it): the workers are asked to stop one at a time, as workers leaving
// a pool that goes on always are (a rolling restart's, a retirement's),
// so that no two of them close their listeners at once. Each is asked
// once the one before has reported [MessageClosed], or exited, or
// [CloseWait] has passed; StopTimeout runs from each worker's own request.
func (s *Supervisor) StopInTurn(why string) bool {
	return s.send(command{kind: cmdStop, why: why, inTurn: true})
}

// CloseWait bounds how long a worker asked to stop while its pool's
// listeners live on (see [Supervisor.StopInTurn]) holds up the next one:
// past it without a [MessageClosed] (a worker of an older build never
// sends one), the next is asked to stop anyway.
const CloseWait = 100 * time.Millisecond

// Kill kills every worker at once with SIGKILL; Run returns [ErrKilled].
func (s *Supervisor) Kill() bool { return s.send(command{kind: cmdKill}) }

// Restart begins a rolling restart: each worker is replaced by a new one
// (Surge at a time), the old one stopping only once its replacement is ready
// and the old worker asked to stop before it has closed its listener (see
// [Supervisor.StopInTurn]).
func (s *Supervisor) Restart() bool { return s.send(command{kind: cmdRestart}) }

// Report logs ev and passes it to Config.OnEvent on Run's goroutine, in
// order with the pool's own events: for events that the program driving the
// supervisor originates (a refusal of its own, a binary upgrade). It reports
// false if Run has returned.
func (s *Supervisor) Report(ev Event) bool { return s.send(command{kind: cmdReport, ev: ev}) }

// Workers returns the live workers ordered by ID, or nil if Run has returned.
func (s *Supervisor) Workers() []Worker { return s.Snapshot().Workers }

// Snapshot is the pool's state at one moment.
type Snapshot struct {
	Workers  []Worker // the live workers, ordered by ID
	Desired  int      // the slots that should have a worker
	Rolling  bool     // a rolling restart is under way
	Degraded bool     // workers fail to start while others serve (EventDegraded)
	Stopping bool     // the pool is stopping
}

// Snapshot returns the pool's state, or the zero Snapshot if Run has
// returned.
func (s *Supervisor) Snapshot() Snapshot {
	c := command{kind: cmdList, reply: make(chan Snapshot, 1)}
	if !s.send(c) {
		return Snapshot{}
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
	timerDrained   // a draining worker's slot has drained
	timerCloseWait // CloseWait has passed since the worker was asked to stop
)

type worker struct {
	Worker
	proc       Process
	lastSeen   time.Time // last message
	served     int64     // from the last heartbeat
	inFlight   int64
	killReason string // set when we SIGKILL it
	replaces   int    // ID of the worker this one replaces, or 0
	replaceWhy string // why it replaces it, if it asked: ReasonStuck, ReasonMemory ("" for a recycle or a restart)
	failure    string // what it reported in a Failed message
	stopTimer  *time.Timer
	// turnWhy, if set, is why it waits its turn to be asked to stop (see
	// requestStop): it still serves meanwhile.
	turnWhy string
}

// leaving reports whether w is on its way out: draining, stopping, or
// waiting its turn to be asked to stop.
func (w *worker) leaving() bool { return w.Worker.leaving() || w.turnWhy != "" }

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
	inTurn   bool // the pool's stop asks its workers to stop one at a time
	result   error
	timeouts []int // pids killed at the stop deadline

	holding bool    // emit queues events (see holdEvents)
	held    []Event // queued events, in order

	// Stops in turn (see requestStop): the worker asked to stop whose
	// listener may still be open (0: none), its CloseWait timer, and the
	// workers waiting their turn, in order.
	closing    int
	closeTimer *time.Timer
	turns      []int
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
	if l.closeTimer != nil {
		l.closeTimer.Stop()
	}
	if l.result == nil && len(l.timeouts) > 0 {
		l.result = &StopTimeoutError{Timeout: s.cfg.StopTimeout, Pids: l.timeouts}
	}
	return l.result
}
