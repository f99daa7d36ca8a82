//go:build unix

package supervisorproc

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/supervisor"
)

// steered is the listeners of migration "cbpf": the supervisor holds one
// SO_REUSEPORT listening socket per slot in a [sockets.Group], and each
// worker accepts on its slot's socket (inherited at proto.ListenerFD, or
// received on activation by a standby).
// Because the supervisor holds the sockets, a worker that exits (crash,
// rolling restart, recycling) leaves its queued connections to the next
// worker of its slot instead of the kernel resetting them; classic BPF
// steering (no privilege needed) sends new connections only to slots with a
// ready worker. A slot that leaves the pool (TTOU) is steered away from and
// its worker keeps accepting until nothing more arrives; only then is it
// asked to stop, and the socket closes once the worker has exited.
//
// Its methods are called on the supervisor's goroutine (Spawn and the
// supervisor's hooks) and the dispatcher's (requests, upgrade), so it locks.
type steered struct {
	wg     sync.WaitGroup       // drain waits
	quit   chan struct{}        // closed by Close: drain waits end
	res    *sockets.Reservation // holds the port if every socket closes
	oldPID int                  // the supervisor this one replaces (binary upgrade), or 0
	mu     sync.Mutex
	g      *sockets.Group
	log    *slog.Logger
	// With the sockets handed to a new supervisor that failed, its
	// workers (orphans now) may still hold them until this time.
	failedUpgradeUntil time.Time
	orphans            time.Duration // how long such workers may live
	slots              map[int]*steerSlot
	frozen             bool // a successor steers (binary upgrade), or the pool stops
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

func newSteered(g *sockets.Group, log *slog.Logger, t proto.Timing) *steered {
	return &steered{g: g, log: log, slots: make(map[int]*steerSlot), settle: t.Settle, orphans: t.Orphans, quit: make(chan struct{})}
}

// openSteered returns the steered listeners of a new group on the address
// res reserves; slot 0's socket opens at once, which fails if sockets the
// supervisor does not hold listen on the address.
func openSteered(res *sockets.Reservation, log *slog.Logger, t proto.Timing) (*steered, error) {
	g, err := sockets.NewGroup(res.Addr())
	if err != nil {
		return nil, err
	}
	s := newSteered(g, log, t)
	s.res = res
	if _, err := s.socketFor(0); err != nil {
		g.CloseAll()
		return nil, err
	}
	return s, nil
}

// adoptSteered returns the steered listeners of the group an old supervisor
// handed over (in the kernel's order); each socket counts as served by the
// old supervisor's worker until this pool is ready.
func adoptSteered(g *sockets.Group, res *sockets.Reservation, oldPID int, log *slog.Logger, t proto.Timing) (*steered, error) {
	if err := g.Verify(); err != nil {
		return nil, err
	}
	s := newSteered(g, log, t)
	s.res, s.oldPID = res, oldPID
	s.adopt()
	return s, nil
}

// Close ends the drain waits, waits for them, and closes every socket and
// the reservation.
func (s *steered) Close() error {
	close(s.quit)
	s.wg.Wait()
	s.g.CloseAll()
	if s.res != nil {
		return s.res.Close()
	}
	return nil
}

func (s *steered) addr() string                 { return s.g.Addr() }
func (s *steered) migration() sockets.Migration { return sockets.MigrationCBPF }
func (s *steered) inherited() bool              { return true }

// listener returns a duplicate of slot's socket; a standby gets its socket
// on activation.
func (s *steered) listener(slot int) (*os.File, error) {
	if slot < 0 {
		return nil, nil
	}
	sock, err := s.socketFor(slot)
	if err != nil {
		return nil, err
	}
	return sock.File()
}

// refuse says why req may not change the group now: a socket closed while
// another process still holds it does not leave the group when this
// supervisor's order says it does, and one opened while foreign sockets are
// in the group does not get the index it expects.
func (s *steered) refuse(req string) string {
	s.mu.Lock()
	until := s.failedUpgradeUntil
	s.mu.Unlock()
	switch {
	case req == reqRetire && s.oldPID != 0 && os.Getppid() == s.oldPID:
		return fmt.Sprintf("the old supervisor %d is still draining", s.oldPID)
	case time.Now().Before(until):
		return "the workers of the failed binary upgrade may still hold the pool's sockets"
	case req == reqAdd && s.g.Held() > 0:
		return "a retired worker's socket is still held by another process"
	}
	if err := s.g.Verify(); err != nil {
		return err.Error()
	}
	return ""
}

// upgradeFailed takes steering back after a failed upgrade; if the new
// supervisor had started, its workers (orphans now) drain and exit within
// Orphans.
func (s *steered) upgradeFailed(started bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if started {
		s.failedUpgradeUntil = time.Now().Add(s.orphans)
	}
	s.frozen = false
	s.steerLocked()
}

// adopt makes the group's sockets (inherited from an old supervisor, in the
// kernel's order) the sockets of slots 0, 1, …; each counts as served by the
// old supervisor's worker until this pool is ready.
func (s *steered) adopt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.g.Sockets() {
		s.slots[i] = &steerSlot{f: f, ready: map[int]bool{inheritedID: true}, members: map[int]bool{}}
	}
}

// socketFor returns the socket of slot, opening it if the slot has none; a
// released slot taken back keeps its socket.
func (s *steered) socketFor(slot int) (*sockets.Socket, error) {
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

// leaving steers new connections away from slot's socket and starts waiting
// until none arrive; the returned channel is closed then (nil: nothing to
// wait for). The socket closes when its last worker has exited.
func (s *steered) leaving(slot int) <-chan struct{} {
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
func (s *steered) spawned(w supervisor.Worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[w.Slot]; sl != nil {
		sl.members[w.ID] = true
	}
}

// ready: w serves its slot's socket.
func (s *steered) ready(w supervisor.Worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[w.Slot]; sl != nil {
		sl.ready[w.ID] = true
		s.steerLocked()
	}
}

// stopping: w takes no new connections.
func (s *steered) stopping(w supervisor.Worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[w.Slot]; sl != nil {
		delete(sl.ready, w.ID)
		s.steerLocked()
	}
}

// exited: w holds its slot's socket no more; a released slot's socket closes
// with its last worker.
func (s *steered) exited(w supervisor.Worker) {
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
func (s *steered) poolReady() {
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
func (s *steered) poolStopping() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frozen = true
	s.g.CloseAll()
	clear(s.slots)
}

// closeLocked closes a released slot's socket: its workers have exited, so
// the socket leaves the group now and the group's order stays known.
func (s *steered) closeLocked(slot int) {
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
func (s *steered) steerLocked() {
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
func (s *steered) targetsLocked() []*sockets.Socket {
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

// handOver freezes steering for a new supervisor and returns the sockets to
// pass it, in the kernel's order; busy says why not now.
func (s *steered) handOver() (socks []*sockets.Socket, busy string) {
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
