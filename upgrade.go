//go:build unix

package clusterflock

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sockets"
)

// An upgrade (SIGUSR2) starts this program again as a new supervisor, with
// proto.EnvUpgrade naming the old one and the pool's address. The new
// supervisor brings up its own workers on the same port and writes "ready"
// on the pipe at proto.StatusFD once they all serve; the old supervisor then
// stops its workers gracefully and returns from Run. If the new one exits
// first, the old one logs why and keeps serving.

// upgradeResult is how a started successor ended up.
type upgradeResult struct {
	pid int
	err error // nil: it is ready and serving
}

// successor is a new supervisor being started by this one.
type successor struct {
	cmd    *exec.Cmd
	status *os.File
	own    *children
}

// startSuccessor starts the new supervisor and reports on results once;
// group, if not empty, is a steered group's sockets in the kernel's order.
func startSuccessor(src *listenerSource, group []*sockets.Socket, own *children, results chan<- upgradeResult) (*successor, error) {
	path, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, proto.EnvUpgrade+"=") && !strings.HasPrefix(kv, proto.EnvWorker+"=") {
			env = append(env, kv)
		}
	}
	marker := proto.UpgradeEnv{OldPID: os.Getpid(), Shared: src.shared != nil, Socks: len(group), Addr: src.addr}
	env = append(env, proto.EnvUpgrade+"="+marker.Encode())
	files := []*os.File{w} // proto.StatusFD
	socks := group
	if src.shared != nil {
		socks = []*sockets.Socket{src.shared}
	}
	if len(socks) > 0 {
		files = append(files, nil) // proto.ListenerFD, …
	}
	for _, s := range socks {
		f, err := s.File()
		if err != nil {
			closeFiles(files)
			r.Close()
			return nil, err
		}
		files = append(files, f)
	}
	cmd := &exec.Cmd{
		Path:       path,
		Args:       os.Args,
		Env:        env,
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: files,
	}
	err = own.start(cmd)
	closeFiles(files) // the new supervisor has its own
	if err != nil {
		r.Close()
		return nil, err
	}
	s := &successor{cmd: cmd, status: r, own: own}
	go s.watch(results)
	return s, nil
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
	pid := s.cmd.Process.Pid
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

// upgradeRole is set up in a new supervisor started by startSuccessor.
type upgradeRole struct {
	env    proto.UpgradeEnv
	status *os.File          // nil once "ready" is sent
	shared *sockets.Socket   // the pool's listener, if the old pool shared one
	group  []*sockets.Socket // a steered group's sockets, in the kernel's order
}

// takeUpgradeRole reads and removes the upgrade marker; it returns nil if
// this process was not started as a successor by its parent.
func takeUpgradeRole(log *slog.Logger) *upgradeRole {
	v, ok := os.LookupEnv(proto.EnvUpgrade)
	if !ok {
		return nil
	}
	os.Unsetenv(proto.EnvUpgrade)
	env, err := proto.ParseUpgradeEnv(v)
	if err != nil || env.OldPID != os.Getppid() {
		log.Warn("ignoring an upgrade marker that does not name this process's parent", "value", v)
		return nil
	}
	syscall.CloseOnExec(proto.StatusFD)
	u := &upgradeRole{env: env, status: os.NewFile(proto.StatusFD, "clusterflock-upgrade")}
	if env.Shared {
		u.shared = inheritedSocket(proto.ListenerFD, log)
	}
	for i := range env.Socks {
		if s := inheritedSocket(proto.ListenerFD+i, log); s != nil {
			u.group = append(u.group, s)
		}
	}
	return u
}

// inheritedSocket takes over the socket at fd, or logs why not and returns
// nil (the new supervisor then fails to start for want of it).
func inheritedSocket(fd int, log *slog.Logger) *sockets.Socket {
	syscall.CloseOnExec(fd)
	s, err := sockets.Hold(os.NewFile(uintptr(fd), "clusterflock-listener"))
	if err != nil {
		log.Error("cannot take over an inherited socket", "fd", fd, "err", err.Error())
		return nil
	}
	return s
}

// ready tells the old supervisor that this one serves.
func (u *upgradeRole) ready() {
	if u == nil || u.status == nil {
		return
	}
	_ = proto.Write(u.status, proto.Message{Kind: proto.Ready})
	u.status.Close()
	u.status = nil
}

// fail tells the old supervisor why this one gives up.
func (u *upgradeRole) fail(err error) {
	if u == nil || u.status == nil {
		return
	}
	_ = proto.Write(u.status, proto.Message{Kind: proto.Failed, Text: err.Error()})
	u.status.Close()
	u.status = nil
}
