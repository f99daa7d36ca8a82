//go:build unix

package supervisorproc

import (
	"os"
	"slices"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/supervisor"
	"golang.org/x/sys/unix"
)

// spares keeps one standby worker (Options.Spare): started and initialised,
// waiting on its control socket for the slot it is to serve in. Its methods
// run on the supervisor's goroutine (in Spawn) and in Close.
type spares struct {
	s       *spawner
	standby *standby   // the standby, or nil
	retired []*standby // standbys stopped (new generation), reaped by close
}

// standby is a worker started ahead of need.
type standby struct {
	p       *process
	control *os.File // write end of its proto.ControlFD
	gen     int
}

// take activates the standby for w if there is one of w's generation,
// alive and waiting; else it returns nil (a fresh worker is started).
func (sp *spares) take(w supervisor.Worker) *process {
	sb := sp.takeStandby(w.Generation)
	if sb == nil {
		return nil
	}
	err := sp.activate(sb, w)
	sb.control.Close()
	if err != nil {
		sb.p.Kill() // it cannot read its activation: a fresh worker instead
		sp.retired = append(sp.retired, sb)
		return nil
	}
	return sb.p
}

// activate sends a standby its slot and generation, and the slot's socket
// if the supervisor holds one per slot that the standby did not inherit.
func (sp *spares) activate(sb *standby, w supervisor.Worker) error {
	act := proto.Activation{Slot: w.Slot, Generation: w.Generation}
	var rights []byte
	if !sb.p.hasListener {
		ln, err := sp.s.lis.listener(w.Slot)
		if err != nil {
			return err
		}
		if ln != nil {
			defer ln.Close()
			rights = unix.UnixRights(int(ln.Fd()))
			act.Socket = true
		}
	}
	rc, err := sb.control.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), []byte(act.Encode()), rights, nil, 0)
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	return serr
}

// takeStandby returns the standby if it is of generation gen, alive and
// waiting, and forgets it; a standby of an older generation is stopped.
func (sp *spares) takeStandby(gen int) *standby {
	sb := sp.standby
	if sb == nil {
		return nil
	}
	select {
	case <-sb.p.standing:
	default:
		return nil // still starting: leave it for the next spawn
	}
	if sb.gen != gen {
		sp.retireStandby()
		return nil
	}
	sp.standby = nil
	select {
	case <-sb.p.exited:
		sp.retired = append(sp.retired, sb)
		return nil
	default:
	}
	return sb
}

func (sp *spares) retireStandby() {
	sb := sp.standby
	sp.standby = nil
	sb.control.Close() // EOF: it exits without serving
	sp.retired = append(sp.retired, sb)
}

// start starts a standby for generation gen unless one exists.
func (sp *spares) start(gen int) {
	sp.retired = slices.DeleteFunc(sp.retired, func(sb *standby) bool { return exited(sb.p) }) // reaped: forget
	if sp.standby != nil {
		if !exited(sp.standby.p) {
			return
		}
		sp.retired = append(sp.retired, sp.standby)
		sp.standby = nil
	}
	cr, cw, err := socketPair()
	if err != nil {
		return // no standby this time; the next spawn tries again
	}
	p, err := sp.s.start(supervisor.Worker{Slot: proto.StandbySlot, Generation: gen}, cr)
	cr.Close()
	if err != nil {
		cw.Close()
		return
	}
	sp.standby = &standby{p: p, control: cw, gen: gen}
}

// close stops the standby, if any, and waits (bounded) for every standby
// stopped.
func (sp *spares) close() {
	if sp.standby != nil {
		sp.retireStandby()
	}
	for _, sb := range sp.retired {
		select {
		case <-sb.p.exited:
		case <-time.After(sp.s.timing.Reap):
			sb.p.Kill()
			<-sb.p.exited
		}
	}
}

func exited(p *process) bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}
