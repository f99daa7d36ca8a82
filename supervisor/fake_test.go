package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterflock/clusterflock/supervisor"
)

// termAction is what a fake process does when it receives SIGTERM.
type termAction int

const (
	termExit   termAction = iota // exit at once with status 0
	termIgnore                   // keep running (until SIGKILL or Exit)
)

// fakeProc is a supervisor.Process the test drives: it sends messages and
// exits when told to, and records the signals it receives. SIGKILL always
// ends it with Signal KILL.
type fakeProc struct {
	w    supervisor.Worker // as passed to Spawn
	pid  int
	msgs chan supervisor.Message
	done chan struct{}

	mu      sync.Mutex
	onTerm  termAction
	exited  bool
	exit    supervisor.Exit
	signals []os.Signal
}

func newFakeProc(w supervisor.Worker) *fakeProc {
	return &fakeProc{
		w:    w,
		pid:  1000 + w.ID,
		msgs: make(chan supervisor.Message, 64),
		done: make(chan struct{}),
	}
}

func (p *fakeProc) Pid() int                            { return p.pid }
func (p *fakeProc) Messages() <-chan supervisor.Message { return p.msgs }

func (p *fakeProc) Wait() supervisor.Exit {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

func (p *fakeProc) String() string { return fmt.Sprintf("worker %d (pid %d)", p.w.ID, p.pid) }

// ignoreTerm makes the process keep running on SIGTERM.
func (p *fakeProc) ignoreTerm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onTerm = termIgnore
}

// Ready, Heartbeat, Fail, Retiring, Closed and Invalid send a message to the supervisor.
func (p *fakeProc) Ready()     { p.send(supervisor.Message{Kind: supervisor.MessageReady}) }
func (p *fakeProc) Heartbeat() { p.send(supervisor.Message{Kind: supervisor.MessageHeartbeat}) }
func (p *fakeProc) Fail(text string) {
	p.send(supervisor.Message{Kind: supervisor.MessageFailed, Text: text})
}
func (p *fakeProc) Retiring(text string) {
	p.send(supervisor.Message{Kind: supervisor.MessageRetiring, Text: text})
}
func (p *fakeProc) Closed() { p.send(supervisor.Message{Kind: supervisor.MessageClosed}) }
func (p *fakeProc) Invalid(text string) {
	p.send(supervisor.Message{Kind: supervisor.MessageInvalid, Text: text})
}

// Exit and ExitSignal end the process.
func (p *fakeProc) Exit(code int)                 { p.end(supervisor.Exit{Code: code}) }
func (p *fakeProc) ExitSignal(sig syscall.Signal) { p.end(supervisor.Exit{Code: -1, Signal: sig}) }

// Exited reports whether the process has ended.
func (p *fakeProc) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// Signals returns the signals received so far.
func (p *fakeProc) Signals() []os.Signal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]os.Signal{}, p.signals...)
}

func (p *fakeProc) send(m supervisor.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		panic(fmt.Sprintf("%v: sends %s after exit", p, m.Kind))
	}
	select {
	case p.msgs <- m:
	default:
		panic(fmt.Sprintf("%v: message buffer full", p))
	}
}

func (p *fakeProc) end(e supervisor.Exit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		panic(fmt.Sprintf("%v: exits twice", p))
	}
	p.exitLocked(e)
}

func (p *fakeProc) exitLocked(e supervisor.Exit) {
	p.exited, p.exit = true, e
	close(p.msgs)
	close(p.done)
}

// Stop and Kill implement supervisor.Process as SIGTERM and SIGKILL do.
func (p *fakeProc) Stop() error { return p.signal(syscall.SIGTERM) }
func (p *fakeProc) Kill() error { return p.signal(syscall.SIGKILL) }

// signal records sig and acts on it like a well-behaved worker: SIGKILL ends
// the process, SIGTERM ends it unless it ignores SIGTERM.
func (p *fakeProc) signal(sig os.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.signals = append(p.signals, sig)
	if p.exited {
		return os.ErrProcessDone
	}
	switch sig {
	case syscall.SIGKILL:
		p.exitLocked(supervisor.Exit{Code: -1, Signal: syscall.SIGKILL})
	case syscall.SIGTERM:
		if p.onTerm == termExit {
			p.exitLocked(supervisor.Exit{Code: 0})
		}
	}
	return nil
}

// fakeSpawner records every spawn. setup, if set, runs for each spawn and
// may configure the process or fail the fork by returning an error.
type fakeSpawner struct {
	mu      sync.Mutex
	setup   func(w supervisor.Worker, p *fakeProc) error
	spawned []supervisor.Worker // every Spawn call, failed or not
	procs   map[int]*fakeProc   // by worker ID
	// released records SlotLeaving calls, each with the signals the
	// released slot's live workers had received by then.
	released []release
	// drain, if set, is what SlotLeaving returns for a slot.
	drain func(slot int) <-chan struct{}
}

type release struct {
	Slot    int
	Signals []os.Signal
}

// SlotLeaving implements supervisor.Hooks: it records the call.
func (s *fakeSpawner) SlotLeaving(slot int) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := release{Slot: slot}
	for _, p := range s.procs {
		if p.w.Slot == slot && !p.Exited() {
			r.Signals = append(r.Signals, p.Signals()...)
		}
	}
	s.released = append(s.released, r)
	if s.drain != nil {
		return s.drain(slot)
	}
	return nil
}

// The other hooks are not recorded: the events say the same.
func (s *fakeSpawner) WorkerReady(supervisor.Worker)    {}
func (s *fakeSpawner) WorkerStopping(supervisor.Worker) {}
func (s *fakeSpawner) WorkerExited(supervisor.Worker)   {}
func (s *fakeSpawner) PoolReady(n int)                  {}
func (s *fakeSpawner) Restart(phase string)             {}
func (s *fakeSpawner) PoolStopping(reason string)       {}

func (s *fakeSpawner) releases() []release {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]release(nil), s.released...)
}

func (s *fakeSpawner) Spawn(w supervisor.Worker) (supervisor.Process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spawned = append(s.spawned, w)
	p := newFakeProc(w)
	if s.setup != nil {
		if err := s.setup(w, p); err != nil {
			return nil, err
		}
	}
	if s.procs == nil {
		s.procs = make(map[int]*fakeProc)
	}
	s.procs[w.ID] = p
	return p, nil
}

// proc returns the process of worker id; it fails the test if there is none.
func (s *fakeSpawner) proc(t testing.TB, id int) *fakeProc {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.procs[id]
	if !ok {
		t.Fatalf("worker %d was never spawned", id)
	}
	return p
}

// get returns the process of worker id, or nil.
func (s *fakeSpawner) get(id int) *fakeProc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[id]
}

func (s *fakeSpawner) spawns() []supervisor.Worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]supervisor.Worker(nil), s.spawned...)
}

// ev is the stable, comparable part of a supervisor.Event.
type ev struct {
	Kind   supervisor.EventKind
	ID     int
	Slot   int
	Gen    int
	Exit   supervisor.Exit
	Delay  time.Duration
	Reason string
}

func project(e supervisor.Event) ev {
	return ev{Kind: e.Kind, ID: e.Worker.ID, Slot: e.Worker.Slot, Gen: e.Worker.Generation,
		Exit: e.Exit, Delay: e.Delay, Reason: e.Reason}
}

func (e ev) String() string {
	s := string(e.Kind)
	if e.ID != 0 {
		s += fmt.Sprintf(" worker=%d slot=%d gen=%d", e.ID, e.Slot, e.Gen)
	}
	switch e.Kind {
	case supervisor.EventExit:
		s += " " + e.Exit.String()
	case supervisor.EventRefork:
		s += fmt.Sprintf(" slot=%d delay=%v", e.Slot, e.Delay)
	}
	if e.Reason != "" {
		s += fmt.Sprintf(" (%s)", e.Reason)
	}
	return s
}

// Constructors for expected events.
func eSpawn(id, slot, gen int) ev {
	return ev{Kind: supervisor.EventSpawn, ID: id, Slot: slot, Gen: gen}
}
func eReady(id, slot, gen int) ev {
	return ev{Kind: supervisor.EventReady, ID: id, Slot: slot, Gen: gen}
}
func eStop(id, slot, gen int, why string) ev {
	return ev{Kind: supervisor.EventStop, ID: id, Slot: slot, Gen: gen, Reason: why}
}
func eDrain(id, slot, gen int, why string) ev {
	return ev{Kind: supervisor.EventDrain, ID: id, Slot: slot, Gen: gen, Reason: why}
}
func eKill(id, slot, gen int, why string) ev {
	return ev{Kind: supervisor.EventKill, ID: id, Slot: slot, Gen: gen, Reason: why}
}
func eExit(id, slot, gen int, e supervisor.Exit, why string) ev {
	return ev{Kind: supervisor.EventExit, ID: id, Slot: slot, Gen: gen, Exit: e, Reason: why}
}
func eRefork(slot int, d time.Duration) ev {
	return ev{Kind: supervisor.EventRefork, Slot: slot, Delay: d}
}
func ePoolReady() ev             { return ev{Kind: supervisor.EventPoolReady} }
func eRefused(why string) ev     { return ev{Kind: supervisor.EventRefused, Reason: why} }
func eRestart(why string) ev     { return ev{Kind: supervisor.EventRestart, Reason: why} }
func eStopping(why string) ev    { return ev{Kind: supervisor.EventStopping, Reason: why} }
func code(c int) supervisor.Exit { return supervisor.Exit{Code: c} }
func killed() supervisor.Exit    { return supervisor.Exit{Code: -1, Signal: syscall.SIGKILL} }

// harness runs a Supervisor with a fakeSpawner inside a synctest bubble and
// records its events.
type harness struct {
	t      *testing.T
	sup    *supervisor.Supervisor
	sp     *fakeSpawner
	cancel context.CancelFunc
	errc   chan error

	mu     sync.Mutex
	events []ev
	seen   int // events already returned by take
	err    error
	ended  bool
}

// start runs a Supervisor for cfg (its Spawner, Logger and OnEvent are set
// here) and waits until it has settled. It must be called inside a synctest
// bubble. A cleanup kills the pool if the test left it running.
func start(t *testing.T, cfg supervisor.Config, setup func(supervisor.Worker, *fakeProc) error) *harness {
	t.Helper()
	h := &harness{t: t, sp: &fakeSpawner{setup: setup}, errc: make(chan error, 1)}
	cfg.Spawner = h.sp
	cfg.Hooks = h.sp
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.OnEvent = func(e supervisor.Event) {
		h.mu.Lock()
		h.events = append(h.events, project(e))
		h.mu.Unlock()
	}
	sup, err := supervisor.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.sup = sup
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.errc <- sup.Run(ctx) }()
	t.Cleanup(func() {
		if !h.ended {
			sup.Kill()
			h.wait()
		}
		cancel()
	})
	synctest.Wait()
	return h
}

// proc returns the fake process of worker id.
func (h *harness) proc(id int) *fakeProc { h.t.Helper(); return h.sp.proc(h.t, id) }

// take waits for the bubble to settle and returns the events since the last
// take.
func (h *harness) take() []ev {
	synctest.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	got := append([]ev{}, h.events[h.seen:]...)
	h.seen = len(h.events)
	return got
}

// expect checks that the events since the last take are want, in order.
func (h *harness) expect(want ...ev) {
	h.t.Helper()
	if want == nil {
		want = []ev{}
	}
	if diff := diffEvents(want, h.take()); diff != "" {
		h.t.Errorf("events (-want +got):\n%s", diff)
	}
}

// wait waits (at most an hour of fake time) for Run to return and returns its
// error.
func (h *harness) wait() error {
	h.t.Helper()
	if h.ended {
		return h.err
	}
	select {
	case err := <-h.errc:
		h.err, h.ended = err, true
		return err
	case <-time.After(time.Hour):
		h.t.Fatal("Run did not return")
		return nil
	}
}

// running reports whether Run has not returned yet.
func (h *harness) running() bool {
	synctest.Wait()
	if h.ended {
		return false
	}
	select {
	case err := <-h.errc:
		h.err, h.ended = err, true
		return false
	default:
		return true
	}
}

// readyAll sends ready from each of the workers ids, in order.
func (h *harness) readyAll(ids ...int) {
	for _, id := range ids {
		h.proc(id).Ready()
		synctest.Wait()
	}
}

// wantSignals checks the signals worker id has received.
func (h *harness) wantSignals(id int, want ...os.Signal) {
	h.t.Helper()
	synctest.Wait()
	if want == nil {
		want = []os.Signal{}
	}
	got := h.proc(id).Signals()
	if got == nil {
		got = []os.Signal{}
	}
	if diff := diffAny(want, got); diff != "" {
		h.t.Errorf("signals to worker %d (-want +got):\n%s", id, diff)
	}
}

// wantWorkers checks the IDs, slots, generations and states of the live
// workers.
func (h *harness) wantWorkers(want ...supervisor.Worker) {
	h.t.Helper()
	synctest.Wait()
	var got []supervisor.Worker
	for _, w := range h.sup.Workers() {
		got = append(got, supervisor.Worker{ID: w.ID, Slot: w.Slot, Generation: w.Generation, State: w.State})
	}
	if diff := diffAny(want, got); diff != "" {
		h.t.Errorf("Workers() (-want +got):\n%s", diff)
	}
}

func wk(id, slot, gen int, st supervisor.State) supervisor.Worker {
	return supervisor.Worker{ID: id, Slot: slot, Generation: gen, State: st}
}

func diffEvents(want, got []ev) string { return cmp.Diff(want, got) }

func diffAny(want, got any) string { return cmp.Diff(want, got) }

var errFork = errors.New("resource temporarily unavailable")

// Send sends any message to the supervisor.
func (p *fakeProc) Send(k supervisor.MessageKind, text string) {
	p.send(supervisor.Message{Kind: k, Text: text})
}
