//go:build unix

package clusterflock

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/supervisor"
)

// steering is the supervisor's side of migration "cbpf": the supervisor
// holds one SO_REUSEPORT listening socket per slot in a [sockets.Group], and
// each worker accepts on its slot's socket (inherited at proto.ListenerFD).
// Because the supervisor holds the sockets, a worker that exits (crash,
// rolling restart, recycling) leaves its queued connections to the next
// worker of its slot instead of the kernel resetting them; classic BPF
// steering (no privilege needed) sends new connections only to slots with a
// ready worker. A slot that leaves the pool (TTOU) is steered away from and
// its worker keeps accepting until nothing more arrives; only then is it
// asked to stop, and the socket closes once the worker has exited.
//
// Its methods are called on the supervisor's goroutine (Spawn and the
// supervisor's hooks) and the dispatcher's (upgrade), so it locks.
type steering struct {
	wg     sync.WaitGroup // drain waits
	quit   chan struct{}  // closed by close: drain waits end
	mu     sync.Mutex
	g      *sockets.Group
	log    *slog.Logger
	slots  map[int]*steerSlot
	frozen bool // a successor steers (binary upgrade), or the pool stops
	// suspended: sockets the supervisor does not hold are in the group, so
	// its order is not the kernel's; the kernel's hash chooses meanwhile.
	suspended bool
	// settle bounds the wait for a released slot's socket to become quiet:
	// half the stop timeout, which runs meanwhile.
	settle time.Duration
}

type steerSlot struct {
	f        *sockets.Socket
	ready    map[int]bool  // IDs of ready workers accepting on f; inheritedID: the old supervisor's
	members  map[int]bool  // IDs of workers holding f, ready or not
	released bool          // the slot left the pool: f closes when its last member exits
	settled  chan struct{} // closed once f is quiet, or the slot is taken back
	takeBack func()        // closes settled early (once)
}

// inheritedID stands for the old supervisor's worker on an adopted socket.
const inheritedID = -1

func newSteering(g *sockets.Group, log *slog.Logger, stopTimeout time.Duration) *steering {
	return &steering{g: g, log: log, slots: make(map[int]*steerSlot), settle: stopTimeout / 2, quit: make(chan struct{})}
}

// close ends the drain waits, waits for them, and closes every socket.
func (s *steering) close() {
	close(s.quit)
	s.wg.Wait()
	s.g.CloseAll()
}

// adopt makes the group's sockets (inherited from an old supervisor, in the
// kernel's order) the sockets of slots 0, 1, …; each counts as served by the
// old supervisor's worker until this pool is ready.
func (s *steering) adopt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.g.Sockets() {
		s.slots[i] = &steerSlot{f: f, ready: map[int]bool{inheritedID: true}, members: map[int]bool{}}
	}
}

// fileFor returns the socket of slot, opening it if the slot has none; a
// released slot taken back keeps its socket.
func (s *steering) fileFor(slot int) (*sockets.Socket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[slot]; sl != nil {
		if sl.released {
			// Taken back (TTIN after TTOU): the new worker shares the
			// socket; the old one may stop at once.
			sl.released = false
			sl.takeBack()
			s.steerLocked()
		}
		return sl.f, nil
	}
	if s.frozen {
		return nil, errors.New("no new listening socket while a binary upgrade hands the group over")
	}
	f, err := s.g.Listen()
	if err != nil {
		return nil, err
	}
	s.slots[slot] = &steerSlot{f: f, ready: map[int]bool{}, members: map[int]bool{}}
	s.steerLocked() // nothing for it until its worker is ready
	return f, nil
}

// release steers new connections away from slot's socket and starts waiting
// until none arrive; the returned channel is closed then (nil: nothing to
// wait for). The socket closes when its last worker has exited.
func (s *steering) release(slot int) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[slot]
	if sl == nil {
		return nil
	}
	sl.released = true
	s.steerLocked()
	if len(sl.members) == 0 {
		s.closeLocked(slot)
		return nil
	}
	settled, takenBack := make(chan struct{}), make(chan struct{})
	var once, back sync.Once
	sl.settled = settled
	sl.takeBack = func() {
		back.Do(func() { close(takenBack) })
		once.Do(func() { close(settled) })
	}
	stop, waited := make(chan struct{}), make(chan struct{}) // stop: taken back, or the steering closes
	s.wg.Go(func() {
		select {
		case <-takenBack:
		case <-s.quit:
		case <-waited:
			return
		}
		close(stop)
	})
	s.wg.Go(func() {
		defer close(waited)
		err := sl.f.WaitQuiet(s.settle, stop)
		once.Do(func() { close(settled) })
		if errors.Is(err, sockets.ErrNotQuiet) {
			select {
			case <-takenBack:
			default:
				s.log.Warn("a retired slot's socket still receives connections; its worker is asked to stop anyway",
					"slot", slot, "waited", s.settle, "err", err.Error())
			}
		}
	})
	return settled
}

// spawned: w holds its slot's socket.
func (s *steering) spawned(w supervisor.Worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[w.Slot]; sl != nil {
		sl.members[w.ID] = true
	}
}

// ready: w serves its slot's socket.
func (s *steering) ready(w supervisor.Worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[w.Slot]; sl != nil {
		sl.ready[w.ID] = true
		s.steerLocked()
	}
}

// stopping: w takes no new connections.
func (s *steering) stopping(w supervisor.Worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[w.Slot]; sl != nil {
		delete(sl.ready, w.ID)
		s.steerLocked()
	}
}

// exited: w holds its slot's socket no more; a released slot's socket closes
// with its last worker.
func (s *steering) exited(w supervisor.Worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[w.Slot]
	if sl == nil {
		return
	}
	delete(sl.ready, w.ID)
	delete(sl.members, w.ID)
	if sl.released && len(sl.members) == 0 {
		s.closeLocked(w.Slot)
	}
	s.steerLocked()
}

// poolReady: the old supervisor's workers no longer count as serving the
// sockets this pool adopted.
func (s *steering) poolReady() {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, sl := range s.slots {
		if sl.ready[inheritedID] {
			delete(sl.ready, inheritedID)
			changed = true
		}
	}
	if changed {
		s.steerLocked()
	}
}

// poolStopping: the workers' own references keep the sockets open until
// they have drained; nothing is steered any more.
func (s *steering) poolStopping() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frozen = true
	s.g.CloseAll()
	clear(s.slots)
}

// closeLocked closes a released slot's socket: its workers have exited, so
// the socket leaves the group now and the group's order stays known.
func (s *steering) closeLocked(slot int) {
	f := s.slots[slot].f
	if n, err := f.AcceptQueue(); err == nil && n > 0 {
		s.log.Warn("a retired slot's socket closes with connections queued: the kernel resets them", "slot", slot, "queued", n)
	}
	if err := s.g.Close(f); errors.Is(err, sockets.ErrStillHeld) {
		s.log.Warn("a retired slot's socket is still held by another process: it keeps its place in the group, without connections, until it is gone", "slot", slot)
	} else if err != nil {
		s.log.Error("closing a retired slot's socket", "slot", slot, "err", err.Error())
	}
	delete(s.slots, slot)
}

// steerLocked attaches the program for the current targets: every slot with
// a ready worker that is not leaving.
func (s *steering) steerLocked() {
	if s.frozen {
		return
	}
	to := s.targetsLocked()
	if err := s.g.Verify(); err != nil {
		// Steering by a wrong order would send connections to leaving
		// sockets; the kernel's hash at least spreads them.
		if !s.suspended {
			s.log.Warn("steering suspended: the kernel's hash chooses until the group is the supervisor's alone again", "err", err.Error())
			s.suspended = true
		}
		to = nil
	} else if s.suspended {
		s.log.Info("steering resumed")
		s.suspended = false
	}
	if err := s.g.Steer(to); err != nil {
		s.log.Error("cannot steer new connections", "err", err.Error())
	}
}

// targetsLocked returns the sockets new connections go to, by slot: those
// of slots with a ready worker, or, if none has one (every worker starting or
// being re-forked), every slot that stays, whose connections wait for its
// worker; never a slot that is leaving.
func (s *steering) targetsLocked() []*sockets.Socket {
	var ready, staying []*sockets.Socket
	for _, slot := range slices.Sorted(maps.Keys(s.slots)) {
		if sl := s.slots[slot]; !sl.released {
			staying = append(staying, sl.f)
			if len(sl.ready) > 0 {
				ready = append(ready, sl.f)
			}
		}
	}
	if len(ready) == 0 {
		return staying
	}
	return ready
}

// handOver freezes steering for a successor and returns the sockets to pass
// it, in the kernel's order; busy says why not now.
func (s *steering) handOver() (socks []*sockets.Socket, busy string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range s.slots {
		if sl.released {
			return nil, "a retired worker is still draining"
		}
	}
	if n := s.g.Held(); n > 0 {
		return nil, fmt.Sprintf("%d retired socket(s) are still held by another process", n)
	}
	s.frozen = true
	return s.g.Sockets(), ""
}

// resume takes steering back after a failed upgrade.
func (s *steering) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frozen = false
	s.steerLocked()
}
