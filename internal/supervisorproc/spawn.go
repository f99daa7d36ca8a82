//go:build unix

package supervisorproc

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/plug"
	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/supervisor"
	"golang.org/x/sys/unix"
)

// spawner starts workers by re-executing this program (a supervisor.Spawner).
type spawner struct {
	images   *images // the binary of each generation
	args     []string
	env      []string // without the worker marker
	lis      listeners
	own      *children
	timing   proto.Timing
	log      *slog.Logger
	lifeline *os.File        // read end, inherited by every worker
	keep     *os.File        // write end, held only by the supervisor
	spare    *spares         // Options.Spare, or nil
	metrics  plug.Supervisor // Options.Metrics' supervisor side, or nil
}

func newSpawner(cfg Config, lis listeners, own *children, metrics plug.Supervisor) (*spawner, error) {
	path, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("clusterflock: cannot find this program to re-execute: %w", err)
	}
	im, err := newImages(path)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		im.close()
		return nil, fmt.Errorf("clusterflock: lifeline pipe: %w", err)
	}
	s := &spawner{
		images:   im,
		args:     os.Args,
		env:      workerRuntime(workerEnviron(os.Environ(), cfg.GOMAXPROCS, cfg.Workers, cfg.CPUs), cfg),
		lis:      lis,
		own:      own,
		timing:   cfg.Timing,
		log:      cfg.Logger,
		lifeline: r,
		keep:     w,
		metrics:  metrics,
	}
	if cfg.Spare {
		s.spare = &spares{s: s}
	}
	return s, nil
}

// workerEnviron returns env without the pool's own variables (markers,
// systemd's), with GOMAXPROCS set as Options.GOMAXPROCS asks: gomaxprocs if
// positive, else the environment's GOMAXPROCS if set, else cpus/workers
// (cpus 0: runtime.NumCPU()).
func workerEnviron(env []string, gomaxprocs, workers, cpus int) []string {
	if cpus <= 0 {
		cpus = runtime.NumCPU()
	}
	out := make([]string, 0, len(env)+2)
	explicit := false
	for _, kv := range env {
		if proto.IsInternal(kv) || strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "WATCHDOG_") {
			continue // the supervisor's alone
		}
		if strings.HasPrefix(kv, "GOMAXPROCS=") {
			if gomaxprocs > 0 {
				continue
			}
			explicit = true
		}
		out = append(out, kv)
	}
	switch {
	case gomaxprocs > 0:
		out = append(out, "GOMAXPROCS="+strconv.Itoa(gomaxprocs))
	case !explicit:
		out = append(out, "GOMAXPROCS="+strconv.Itoa(max(1, cpus/workers)))
	}
	return out
}

// workerRuntime adds to env the runtime settings the options ask for.
func workerRuntime(env []string, cfg Config) []string {
	env = withMemoryLimit(env, cfg.MemoryLimit)
	if cfg.KeepSysmonAwake {
		env = withSysmonAwake(env)
	}
	return env
}

// sysmonAwake is the GODEBUG setting of Options.KeepSysmonAwake: any
// schedtrace period keeps sysmon from deep sleep; this one, the largest
// (milliseconds in an int32: 24.8 days), prints a trace as rarely as it can.
const sysmonAwake = "schedtrace=2147483647"

// withSysmonAwake adds sysmonAwake to env's GODEBUG (creating it), unless
// GODEBUG already sets schedtrace: an operator's explicit choice stands.
func withSysmonAwake(env []string) []string {
	out := make([]string, 0, len(env)+1)
	found := false
	for _, kv := range env {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			out = append(out, kv)
			continue
		}
		found = true
		switch {
		case strings.Contains(","+v, ",schedtrace="):
		case v == "":
			kv = "GODEBUG=" + sysmonAwake
		default:
			kv += "," + sysmonAwake
		}
		out = append(out, kv)
	}
	if !found {
		out = append(out, "GODEBUG="+sysmonAwake)
	}
	return out
}

// withMemoryLimit adds GOMEMLIMIT=limit to env (Options.MemoryLimit), unless
// limit is 0 or env sets GOMEMLIMIT: an operator's explicit choice stands.
func withMemoryLimit(env []string, limit int64) []string {
	if limit <= 0 {
		return env
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "GOMEMLIMIT=") {
			return env
		}
	}
	return append(env, "GOMEMLIMIT="+strconv.FormatInt(limit, 10))
}

// Close stops the standby, if any, and releases the lifeline: workers
// still running see EOF. It waits (bounded) for the standbys it stopped.
func (s *spawner) Close() error {
	if s.spare != nil {
		s.spare.close()
	}
	s.lifeline.Close()
	s.images.close()
	return s.keep.Close()
}

// Spawn implements supervisor.Spawner. With Options.Spare the standby takes
// the slot (it only has to listen), and the next standby starts.
func (s *spawner) Spawn(w supervisor.Worker) (supervisor.Process, error) {
	if s.spare != nil {
		defer s.spare.start(w.Generation)
		if p := s.spare.take(w); p != nil {
			s.lis.spawned(w)
			return p, nil
		}
	}
	p, err := s.start(w, nil)
	if err != nil {
		return nil, err
	}
	s.lis.spawned(w)
	return p, nil
}

// start forks a worker for w; control, if not nil, becomes its ControlFD.
func (s *spawner) start(w supervisor.Worker, control *os.File) (*process, error) {
	path, image, err := s.images.pathFor(w.Generation)
	if err != nil {
		return nil, err
	}
	if image != nil {
		defer image.Close() // the worker has its own
	}
	cf, err := s.openChildFiles(w.Slot)
	if err != nil {
		return nil, err
	}
	marker := proto.WorkerEnv{SupervisorPID: os.Getpid(), Slot: w.Slot, Generation: w.Generation,
		Migration: string(s.lis.migration()), Inherited: s.lis.inherited(), Addr: s.lis.addr()}
	// proto.StatusFD, LifelineFD, ListenerFD, ControlFD, StderrFD, ImageFD, MetricsFD (nil: none)
	files := []*os.File{cf.statusW, s.lifeline, cf.ln, control, os.Stderr, image, cf.metricsW}
	env := append(s.env[:len(s.env):len(s.env)], proto.EnvWorker+"="+marker.Encode(), proto.EnvClosed+"=1")
	if cf.metricsW != nil {
		env = append(env, proto.EnvMetrics+"=1")
	}
	command := func(path string) *exec.Cmd {
		return &exec.Cmd{
			Path:        path,
			Args:        s.args,
			Env:         env,
			Stdout:      os.Stdout,
			Stderr:      cf.tapW, // until ready
			ExtraFiles:  files,   // slot i is fd 3+i
			SysProcAttr: workerSysProcAttr(),
		}
	}
	cmd := command(path)
	err = s.own.start(cmd)
	if err != nil && path != s.images.path {
		// The pinned image cannot be executed (a kernel without
		// /proc?): the binary on disk, if still there, serves.
		s.log.Warn("cannot execute the pinned binary; using the one on disk", "path", path, "err", err.Error())
		cmd = command(s.images.path)
		err = s.own.start(cmd)
	}
	cf.closeChildEnds() // the worker has its own
	if err != nil {
		cf.closeOurs()
		return nil, err
	}
	if cf.metrics != nil {
		s.metrics.Attach(cmd.Process.Pid, cf.metrics)
	}
	go cf.tap.run(os.Stderr)
	p := &process{cmd: cmd, own: s.own, status: cf.status, tap: cf.tap, linger: s.timing.Linger, hasListener: cf.ln != nil,
		standby: w.Slot == proto.StandbySlot, maxRate: maxMessageRate(s.timing),
		msgs: make(chan supervisor.Message, 4), exited: make(chan struct{}), waited: make(chan struct{}), readDone: make(chan struct{}), standing: make(chan struct{})}
	go p.read()
	go p.wait()
	return p, nil
}

// childFiles are the descriptors made for one worker: the ends it
// inherits, and the supervisor's.
type childFiles struct {
	status, statusW   *os.File // the status pipe
	tap               *stderrTap
	tapW              *os.File // its stderr until ready
	ln                *os.File // the slot's listener, or nil
	metrics, metricsW *os.File // the metrics channel, or nil
}

// openChildFiles makes a worker's descriptors for slot, or none.
func (s *spawner) openChildFiles(slot int) (*childFiles, error) {
	cf := &childFiles{}
	var err error
	if cf.status, cf.statusW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("status pipe: %w", err)
	}
	if cf.tap, cf.tapW, err = newStderrTap(); err != nil {
		cf.closeChildEnds()
		cf.closeOurs()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	if cf.ln, err = s.lis.listener(slot); err != nil {
		cf.closeChildEnds()
		cf.closeOurs()
		return nil, fmt.Errorf("listener for slot %d: %w", slot, err)
	}
	if cf.metrics, cf.metricsW, err = s.metricsPair(); err != nil {
		cf.closeChildEnds()
		cf.closeOurs()
		return nil, err
	}
	return cf, nil
}

// closeChildEnds closes what the worker inherits (once it has, or if it
// is not started).
func (cf *childFiles) closeChildEnds() {
	closeFiles([]*os.File{cf.statusW, cf.tapW, cf.ln, cf.metricsW})
}

// closeOurs closes the supervisor's ends, for a worker that did not start.
func (cf *childFiles) closeOurs() {
	closeFiles([]*os.File{cf.status, cf.metrics})
	if cf.tap != nil {
		cf.tap.r.Close()
	}
}

// metricsPair is a worker's metrics channel (nil without Options.Metrics):
// the supervisor's end and the worker's.
func (s *spawner) metricsPair() (mine, theirs *os.File, err error) {
	if s.metrics == nil {
		return nil, nil, nil
	}
	return socketPair()
}

// socketPair is a connected pair of unix stream sockets, close-on-exec.
func socketPair() (*os.File, *os.File, error) {
	syscall.ForkLock.RLock() // no fork between the socketpair and CloseOnExec
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "clusterflock-socketpair"), os.NewFile(uintptr(fds[1]), "clusterflock-socketpair"), nil
}

// process is a worker started by spawner (a supervisor.Process).
type process struct {
	cmd         *exec.Cmd
	own         *children
	status      *os.File
	tap         *stderrTap // its stderr until it is ready
	ready       atomic.Bool
	linger      time.Duration
	hasListener bool // it inherited a listener at start
	standby     bool // it was started as a standby
	maxRate     int  // messages a second beyond which it floods
	msgs        chan supervisor.Message
	exited      chan struct{}   // closed when the process is reaped
	waited      chan struct{}   // closed when wait returns
	standing    chan struct{}   // closed when a standby reports it waits
	readDone    chan struct{}   // closed when read returns
	exit        supervisor.Exit // valid once exited is closed
}

func (p *process) Pid() int                            { return p.cmd.Process.Pid }
func (p *process) Messages() <-chan supervisor.Message { return p.msgs }

// Stop implements supervisor.Process: SIGTERM.
func (p *process) Stop() error { return p.cmd.Process.Signal(syscall.SIGTERM) }

// Kill implements supervisor.Process: SIGKILL.
func (p *process) Kill() error { return p.cmd.Process.Kill() }

// Wait implements supervisor.Process. It returns once the process is
// reaped and both of its goroutines have returned.
func (p *process) Wait() supervisor.Exit {
	<-p.waited
	return p.exit
}

// maxMessageRate is how many messages a second a worker may send: far more
// than its heartbeats (and a recycling request with each) ever are.
func maxMessageRate(t proto.Timing) int {
	return max(100, 8*int(time.Second/t.Heartbeat))
}

// messageKind maps the status pipe's words to the supervisor's.
func messageKind(k proto.Kind) (supervisor.MessageKind, bool) {
	switch k {
	case proto.Ready:
		return supervisor.MessageReady, true
	case proto.Heartbeat:
		return supervisor.MessageHeartbeat, true
	case proto.Failed:
		return supervisor.MessageFailed, true
	case proto.Retiring:
		return supervisor.MessageRetiring, true
	case proto.Stuck:
		return supervisor.MessageStuck, true
	case proto.Memory:
		return supervisor.MessageMemory, true
	case proto.Closed:
		return supervisor.MessageClosed, true
	}
	return "", false
}

// read forwards the worker's messages. Whatever breaks the protocol — a
// line that is not a message, a line over proto.MaxLine, "standby" from a
// worker that is not a standby or twice, more messages than a worker sends
// in a second — is reported once as supervisor.MessageInvalid, the worker's
// failure, and nothing more is read. A message of a kind this supervisor
// does not know but that is well formed (a newer worker's) is skipped.
func (p *process) read() {
	defer close(p.readDone)
	defer close(p.msgs)
	defer p.status.Close()
	r := proto.NewReader(p.status)
	flood := newRateLimit(p.maxRate, time.Now())
	standby := p.standby
	for {
		m, err := r.Next()
		if err != nil && !errors.Is(err, proto.ErrUnknown) && !errors.Is(err, proto.ErrTooLong) {
			return // EOF: the worker is gone (or, past Linger, a grandchild holds the pipe)
		}
		why := ""
		switch {
		case errors.Is(err, proto.ErrUnknown) && proto.WellFormedKind(m.Kind):
			continue
		case err != nil:
			why = err.Error()
		case !flood.allow(time.Now()):
			why = fmt.Sprintf("more than %d messages in a second", p.maxRate)
		case m.Kind == proto.Standby && !standby:
			why = `"standby" from a worker that is not a standby, or twice`
		case m.Kind == proto.Standby:
			standby = false
			close(p.standing)
			continue
		}
		if why != "" {
			p.msgs <- supervisor.Message{Kind: supervisor.MessageInvalid, Text: why}
			return
		}
		k, ok := messageKind(m.Kind)
		if !ok {
			continue
		}
		if k == supervisor.MessageReady {
			p.ready.Store(true)
		}
		msg := supervisor.Message{Kind: k, Text: m.Text}
		if l, ok := proto.ParseLoad(m.Text); ok && k == supervisor.MessageHeartbeat {
			msg.Served, msg.InFlight = l.Served, l.InFlight
		}
		p.msgs <- msg
	}
}

// rateLimit counts events per one-second window.
type rateLimit struct {
	max   int
	start time.Time
	n     int
}

func newRateLimit(max int, now time.Time) *rateLimit { return &rateLimit{max: max, start: now} }

// allow counts one event at now and reports whether the window's count is
// within max.
func (r *rateLimit) allow(now time.Time) bool {
	if now.Sub(r.start) >= time.Second {
		r.start, r.n = now, 0
	}
	r.n++
	return r.n <= r.max
}

func (p *process) wait() {
	defer close(p.waited)
	_ = p.cmd.Wait() // the exit status is in ProcessState
	p.own.done(p.cmd.Process.Pid)
	p.exit = exitOf(p.cmd.ProcessState)
	close(p.exited)
	// The status pipe normally reaches EOF with the process; if a
	// grandchild still holds the write end, stop reading after a moment.
	select {
	case <-p.readDone:
	case <-time.After(p.linger):
		p.status.SetReadDeadline(time.Now())
	}
	if last := p.tap.stop(p.linger); !p.ready.Load() {
		p.exit.Stderr = last // why it died at start, if it said
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
