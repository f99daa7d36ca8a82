//go:build unix

package clusterflock

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/supervisor"
	"golang.org/x/sys/unix"
)

// execSpawner starts workers by re-executing this program.
type execSpawner struct {
	path     string
	args     []string
	env      []string // without the worker marker
	src      *listenerSource
	own      *children
	mig      sockets.Migration
	lifeline *os.File // read end, inherited by every worker
	keep     *os.File // write end, held only by the supervisor

	spare   bool       // Options.Spare: keep one standby worker
	standby *standby   // the standby, or nil
	retired []*standby // standbys stopped (new generation), reaped by Close
}

// standby is a worker started ahead of need: initialised, waiting on its
// control pipe for the slot it is to serve in.
type standby struct {
	p       *execProcess
	control *os.File // write end of its proto.ControlFD
	gen     int
}

func newExecSpawner(o options, src *listenerSource, mig sockets.Migration, own *children) (*execSpawner, error) {
	path, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("clusterflock: cannot find this program to re-execute: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("clusterflock: lifeline pipe: %w", err)
	}
	return &execSpawner{
		path:     path,
		args:     os.Args,
		env:      workerEnviron(os.Environ(), o),
		src:      src,
		own:      own,
		mig:      mig,
		lifeline: r,
		keep:     w,
		spare:    o.Spare,
	}, nil
}

// workerEnviron returns env without any worker marker, with GOMAXPROCS set
// as Options.GOMAXPROCS asks.
func workerEnviron(env []string, o options) []string {
	out := make([]string, 0, len(env)+2)
	explicit := false
	for _, kv := range env {
		if strings.HasPrefix(kv, proto.EnvWorker+"=") || strings.HasPrefix(kv, proto.EnvUpgrade+"=") ||
			strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "WATCHDOG_") {
			continue // the supervisor's alone
		}
		if strings.HasPrefix(kv, "GOMAXPROCS=") {
			if o.GOMAXPROCS > 0 {
				continue
			}
			explicit = true
		}
		out = append(out, kv)
	}
	switch {
	case o.GOMAXPROCS > 0:
		out = append(out, "GOMAXPROCS="+strconv.Itoa(o.GOMAXPROCS))
	case !explicit:
		out = append(out, "GOMAXPROCS="+strconv.Itoa(max(1, runtime.NumCPU()/o.Workers)))
	}
	return out
}

// Close stops the standby, if any, and releases the lifeline: workers
// still running see EOF. It waits (bounded) for the standbys it stopped.
func (s *execSpawner) Close() error {
	if s.standby != nil {
		s.retireStandby()
	}
	s.lifeline.Close()
	err := s.keep.Close()
	for _, sb := range s.retired {
		select {
		case <-sb.p.exited:
		case <-time.After(2 * time.Second):
			sb.p.Kill()
			<-sb.p.exited
		}
	}
	return err
}

// Spawn implements supervisor.Spawner. With Options.Spare it hands the
// standby the slot (it only has to listen), then starts the next standby.
func (s *execSpawner) Spawn(w supervisor.Worker) (supervisor.Process, error) {
	if !s.spare {
		p, err := s.start(w, nil)
		return s.process(w, p, err)
	}
	defer s.startStandby(w.Generation)
	if sb := s.takeStandby(w.Generation); sb != nil {
		err := s.activate(sb, w)
		sb.control.Close()
		if err == nil {
			s.spawned(w)
			return sb.p, nil
		}
		sb.p.Kill() // it cannot read its activation: a fresh worker instead
		s.retired = append(s.retired, sb)
	}
	p, err := s.start(w, nil)
	return s.process(w, p, err)
}

// spawned tells a steered group that w holds its slot's socket.
func (s *execSpawner) spawned(w supervisor.Worker) {
	if s.src.steer != nil {
		s.src.steer.spawned(w)
	}
}

// activate sends a standby its slot and generation, and the slot's socket
// if the supervisor holds one per slot (a shared listener it inherited at
// start).
func (s *execSpawner) activate(sb *standby, w supervisor.Worker) error {
	var ln *os.File
	var rights []byte
	if s.src.steer != nil {
		sock, err := s.src.steer.fileFor(w.Slot)
		if err == nil {
			ln, err = sock.File()
		}
		if err != nil {
			return err
		}
		defer ln.Close()
		rights = unix.UnixRights(int(ln.Fd()))
	}
	line := fmt.Appendf(nil, "%d %d\n", w.Slot, w.Generation)
	rc, err := sb.control.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), line, rights, nil, 0)
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	runtime.KeepAlive(ln)
	return serr
}

// slotListener returns a duplicate of the listening socket a worker of slot
// inherits (the caller closes it once the worker has started), or nil if the
// worker opens its own.
func (s *execSpawner) slotListener(slot int) (*os.File, error) {
	sock := s.src.shared
	if s.src.steer != nil && slot >= 0 {
		var err error
		if sock, err = s.src.steer.fileFor(slot); err != nil {
			return nil, err
		}
	}
	if sock == nil {
		return nil, nil
	}
	return sock.File()
}

// process converts start's result without wrapping a nil pointer.
func (s *execSpawner) process(w supervisor.Worker, p *execProcess, err error) (supervisor.Process, error) {
	if err != nil {
		return nil, err
	}
	s.spawned(w)
	return p, nil
}

// takeStandby returns the standby if it is of generation gen, alive and
// waiting, and forgets it; a standby of an older generation is stopped.
func (s *execSpawner) takeStandby(gen int) *standby {
	sb := s.standby
	if sb == nil {
		return nil
	}
	select {
	case <-sb.p.standing:
	default:
		return nil // still starting: leave it for the next spawn
	}
	if sb.gen != gen {
		s.retireStandby()
		return nil
	}
	s.standby = nil
	select {
	case <-sb.p.exited:
		s.retired = append(s.retired, sb)
		return nil
	default:
	}
	return sb
}

func (s *execSpawner) retireStandby() {
	sb := s.standby
	s.standby = nil
	sb.control.Close() // EOF: it exits without serving
	s.retired = append(s.retired, sb)
}

// startStandby starts a standby for generation gen unless one exists.
func (s *execSpawner) startStandby(gen int) {
	s.retired = slices.DeleteFunc(s.retired, func(sb *standby) bool { // reaped: forget
		select {
		case <-sb.p.exited:
			return true
		default:
			return false
		}
	})
	if s.standby != nil {
		select {
		case <-s.standby.p.exited:
			s.retired = append(s.retired, s.standby)
			s.standby = nil
		default:
			return
		}
	}
	syscall.ForkLock.RLock() // no fork between socketpair and close-on-exec
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return // no standby this time; the next spawn tries again
	}
	cr, cw := os.NewFile(uintptr(fds[0]), "standby-control"), os.NewFile(uintptr(fds[1]), "standby-control")
	p, err := s.start(supervisor.Worker{Slot: proto.StandbySlot, Generation: gen}, cr)
	cr.Close()
	if err != nil {
		cw.Close()
		return
	}
	s.standby = &standby{p: p, control: cw, gen: gen}
}

// start forks a worker for w; control, if not nil, becomes its ControlFD.
func (s *execSpawner) start(w supervisor.Worker, control *os.File) (*execProcess, error) {
	sr, sw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("status pipe: %w", err)
	}
	ln, err := s.slotListener(w.Slot)
	if err != nil {
		sr.Close()
		sw.Close()
		return nil, fmt.Errorf("listener for slot %d: %w", w.Slot, err)
	}
	marker := proto.WorkerEnv{SupervisorPID: os.Getpid(), Slot: w.Slot, Generation: w.Generation, Migration: string(s.mig), Addr: s.src.addr}
	files := []*os.File{sw, s.lifeline, ln} // proto.StatusFD, LifelineFD, ListenerFD (nil: none)
	if control != nil {
		files = append(files, control) // proto.ControlFD
	}
	cmd := &exec.Cmd{
		Path:        s.path,
		Args:        s.args,
		Env:         append(s.env[:len(s.env):len(s.env)], proto.EnvWorker+"="+marker.Encode()),
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		ExtraFiles:  files, // slot i is fd 3+i
		SysProcAttr: workerSysProcAttr(),
	}
	err = s.own.start(cmd)
	sw.Close()
	if ln != nil {
		ln.Close() // the worker has its own
	}
	if err != nil {
		sr.Close()
		return nil, err
	}
	p := &execProcess{cmd: cmd, own: s.own, status: sr, msgs: make(chan supervisor.Message, 4),
		exited: make(chan struct{}), readDone: make(chan struct{}), standing: make(chan struct{})}
	go p.read()
	go p.wait()
	return p, nil
}

// execProcess is a worker started by execSpawner.
type execProcess struct {
	cmd      *exec.Cmd
	own      *children
	status   *os.File
	msgs     chan supervisor.Message
	exited   chan struct{}   // closed when the process is reaped
	standing chan struct{}   // closed when a standby reports it waits
	readDone chan struct{}   // closed when read returns
	exit     supervisor.Exit // valid once exited is closed
}

func (p *execProcess) Pid() int                            { return p.cmd.Process.Pid }
func (p *execProcess) Messages() <-chan supervisor.Message { return p.msgs }

// Stop implements supervisor.Process: SIGTERM.
func (p *execProcess) Stop() error { return p.cmd.Process.Signal(syscall.SIGTERM) }

// Kill implements supervisor.Process: SIGKILL.
func (p *execProcess) Kill() error { return p.cmd.Process.Kill() }

// Wait implements supervisor.Process.
func (p *execProcess) Wait() supervisor.Exit {
	<-p.exited
	return p.exit
}

func (p *execProcess) read() {
	defer close(p.readDone)
	defer close(p.msgs)
	defer p.status.Close()
	r := proto.NewReader(p.status)
	for {
		m, err := r.Next()
		if errors.Is(err, proto.ErrUnknown) {
			continue
		}
		if err != nil {
			return
		}
		if m.Kind == proto.Standby {
			close(p.standing)
			continue
		}
		p.msgs <- supervisor.Message{Kind: supervisor.MessageKind(m.Kind), Text: m.Text}
	}
}

func (p *execProcess) wait() {
	_ = p.cmd.Wait() // the exit status is in ProcessState
	p.own.done(p.cmd.Process.Pid)
	p.exit = exitOf(p.cmd.ProcessState)
	close(p.exited)
	// The status pipe normally reaches EOF with the process; if a
	// grandchild still holds the write end, stop reading after a moment.
	select {
	case <-p.readDone:
	case <-time.After(200 * time.Millisecond):
		p.status.SetReadDeadline(time.Now())
	}
}

// exitOf converts a process state (nil if it could not be waited for).
func exitOf(ps *os.ProcessState) supervisor.Exit {
	if ps == nil {
		return supervisor.Exit{Code: -1}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return supervisor.Exit{Code: -1, Signal: ws.Signal()}
	}
	return supervisor.Exit{Code: ps.ExitCode()}
}
