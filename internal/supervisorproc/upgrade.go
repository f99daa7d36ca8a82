//go:build unix

package supervisorproc

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sockets"
)

// A binary upgrade (SIGUSR2) starts this program again as a new supervisor,
// with proto.EnvUpgrade naming the old one and the pool's address, and the
// pool's sockets if the supervisor holds them. The new supervisor brings up
// its own workers on the same port and writes "ready" on the pipe at
// proto.StatusFD once they all serve; the old supervisor then stops its
// workers gracefully and returns from Run. If the new one exits first, the
// old one says why and keeps serving. This file is the old supervisor's
// side; heir.go is the new one's.

// upgradeResult is how a started successor ended up.
type upgradeResult struct {
	pid int
	err error // nil: it is ready and serving
}

// successor is a new supervisor being started by this one.
type successor struct {
	pid      int // cmd.Process.Pid, which Release clears
	cmd      *exec.Cmd
	status   *os.File
	own      *children
	handover *os.File // this side of the metrics hand-over, or nil
}

// startSuccessor starts the new supervisor, handing it socks (a steered
// group's sockets in the kernel's order, or the one shared listener) and
// the pool's size (workers, proto.EnvUpgradeWorkers), and reports on
// results once. With metrics, it gets the other end of a hand-over channel
// (see package metrics) at proto.HandoverFD.
func startSuccessor(lis listeners, socks []*sockets.Socket, workers int, metrics bool, own *children, results chan<- upgradeResult) (*successor, error) {
	path, err := os.Executable()
	if err != nil {
		return nil, err
	}
	shared := lis.migration() == sockets.MigrationShared
	marker := proto.UpgradeEnv{OldPID: os.Getpid(), Shared: shared, Addr: lis.addr()}
	if !shared {
		marker.Socks = len(socks)
	}
	files, err := upgradeFiles(socks)
	if err != nil {
		return nil, err
	}
	env := append(withoutMarkers(os.Environ()), proto.EnvUpgrade+"="+marker.Encode())
	if workers > 0 {
		env = append(env, proto.EnvUpgradeWorkers+"="+proto.EncodeUpgradeWorkers(marker.OldPID, workers))
	}
	var mine, theirs *os.File
	if metrics {
		if mine, theirs, err = socketPair(); err != nil {
			closeFiles(files)
			return nil, err
		}
		env = append(env, proto.EnvHandover+"=1")
	}
	r, w, err := os.Pipe()
	if err != nil {
		closeFiles(append(files, mine, theirs))
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:       path,
		Args:       os.Args,
		Env:        env,
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: append([]*os.File{w, theirs}, files...), // proto.StatusFD, HandoverFD, then ListenerFD, …
	}
	err = own.start(cmd)
	w.Close()
	closeFiles(append(files, theirs)) // the new supervisor has its own
	if err != nil {
		r.Close()
		closeFiles([]*os.File{mine})
		return nil, err
	}
	s := &successor{pid: cmd.Process.Pid, cmd: cmd, status: r, own: own, handover: mine}
	go s.watch(results)
	return s, nil
}

// upgradeFiles returns duplicates of socks for ExtraFiles from ListenerFD on.
func upgradeFiles(socks []*sockets.Socket) ([]*os.File, error) {
	if len(socks) == 0 {
		return nil, nil
	}
	var files []*os.File // from ListenerFD (5) on; fd 4 is HandoverFD
	for _, s := range socks {
		f, err := s.File()
		if err != nil {
			closeFiles(files)
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

func withoutMarkers(environ []string) []string {
	env := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if !proto.IsInternal(kv) {
			env = append(env, kv)
		}
	}
	return env
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// watch waits for "ready" or the successor's exit.
func (s *successor) watch(results chan<- upgradeResult) {
	defer s.status.Close()
	pid := s.pid
	rd := proto.NewReader(s.status)
	var failure string
	for {
		m, err := rd.Next()
		if err != nil {
			break
		}
		switch m.Kind {
		case proto.Ready:
			// It lives on after this process: do not wait for it.
			s.own.done(pid)
			s.cmd.Process.Release()
			results <- upgradeResult{pid: pid}
			return
		case proto.Failed:
			failure = m.Text
		}
	}
	_ = s.cmd.Wait() // the exit status is in ProcessState
	s.own.done(pid)
	why := exitOf(s.cmd.ProcessState).String()
	if failure != "" {
		why = failure + " (" + why + ")"
	}
	results <- upgradeResult{pid: pid, err: fmt.Errorf("new supervisor %d exited before its workers were ready: %s", pid, why)}
}

// abandon stops a new supervisor that was not ready when this one stopped,
// and waits (at most limit, then kills it) until it has exited.
func (s *successor) abandon(results <-chan upgradeResult, limit time.Duration) {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-results:
	case <-time.After(limit):
		_ = s.cmd.Process.Kill()
		<-results
	}
}
