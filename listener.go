//go:build unix

package clusterflock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/reuseport"
)

// listenerSource is where a pool's workers get their listeners.
type listenerSource struct {
	addr   string          // the concrete address
	shared *sockets.Socket // a listening socket every worker inherits, or nil: each opens its own
	hold   io.Closer
	why    string // how the source was chosen, for the log

	adopted *sockets.Group // sockets of a steered group inherited by an upgrade
	steer   *steering      // migration "cbpf": the supervisor holds a socket per slot
}

func (s *listenerSource) Close() error {
	if s.shared != nil {
		s.shared.Close()
	}
	if s.steer != nil {
		s.steer.close()
	} else if s.adopted != nil {
		s.adopted.CloseAll()
	}
	if s.hold != nil {
		return s.hold.Close()
	}
	return nil
}

// openListenerSource picks the source: the socket systemd passed (socket
// activation), or one inherited by a binary upgrade; on Linux a reservation
// of the address that each worker's SO_REUSEPORT listener joins; elsewhere
// one listener the supervisor opens and every worker inherits.
func openListenerSource(o options, heir *upgradeRole) (*listenerSource, error) {
	if heir != nil && (heir.env.Shared && heir.shared == nil || len(heir.group) != heir.env.Socks) {
		for _, s := range heir.group {
			s.Close()
		}
		return nil, errors.New("clusterflock: binary upgrade: cannot take over the old supervisor's sockets (logged above)")
	}
	if heir != nil && heir.shared != nil {
		return &listenerSource{addr: heir.env.Addr, shared: heir.shared, why: "inherited from the old supervisor"}, nil
	}
	if heir != nil && len(heir.group) > 0 {
		g, err := sockets.AdoptGroup(heir.group)
		if err != nil {
			for _, s := range heir.group {
				s.Close()
			}
			return nil, fmt.Errorf("clusterflock: binary upgrade: %w", err)
		}
		res, err := sockets.Reserve(heir.env.Addr)
		if err != nil {
			g.CloseAll()
			return nil, fmt.Errorf("clusterflock: binary upgrade: %w", err)
		}
		return &listenerSource{addr: res.Addr(), hold: res, adopted: g, why: "a steered group inherited from the old supervisor"}, nil
	}
	if f, err := systemdListener(); err != nil || f != nil {
		if err != nil {
			return nil, fmt.Errorf("clusterflock: socket activation: %w", err)
		}
		addr, err := listenerAddr(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("clusterflock: socket activation: fd 3: %w", err)
		}
		s, err := sockets.Hold(f)
		if err != nil {
			return nil, fmt.Errorf("clusterflock: socket activation: fd 3: %w", err)
		}
		return &listenerSource{addr: addr, shared: s, why: "socket activation (LISTEN_FDS); Options.Addr is not used"}, nil
	}
	if runtime.GOOS != "linux" || o.Migration == MigrationShared {
		why := "Options.Migration is \"shared\""
		if runtime.GOOS != "linux" {
			why = "no kernel-balanced SO_REUSEPORT on " + runtime.GOOS
		}
		lc := net.ListenConfig{}
		lc.SetMultipathTCP(false)
		ln, err := lc.Listen(context.Background(), "tcp", o.Addr)
		if err != nil {
			return nil, fmt.Errorf("clusterflock: cannot use Options.Addr %q: %w", o.Addr, err)
		}
		defer ln.Close()
		s, err := sockets.HoldListener(ln)
		if err != nil {
			return nil, fmt.Errorf("clusterflock: listener: %w", err)
		}
		return &listenerSource{addr: ln.Addr().String(), shared: s, why: why + ": workers share one listener"}, nil
	}
	res, err := sockets.Reserve(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("clusterflock: cannot use Options.Addr %q: %w", o.Addr, err)
	}
	return &listenerSource{addr: res.Addr(), hold: res}, nil
}

// systemdListener returns the socket systemd passed at fd 3, or nil when
// LISTEN_PID does not name this process. It removes the LISTEN_* variables
// so that workers and the handler's subprocesses do not see them.
func systemdListener() (*os.File, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	if fds != "1" {
		return nil, fmt.Errorf("LISTEN_FDS=%q: the pool serves exactly one socket", fds)
	}
	syscall.CloseOnExec(3)
	return os.NewFile(3, "systemd-socket"), nil
}

// listenerAddr checks that f is a listening TCP socket and returns its address.
func listenerAddr(f *os.File) (string, error) {
	ln, err := net.FileListener(f) // a duplicate; f stays open
	if err != nil {
		return "", err
	}
	defer ln.Close()
	if _, ok := ln.(*net.TCPListener); !ok {
		return "", errors.New("not a TCP listening socket")
	}
	return ln.Addr().String(), nil
}

// steerGroup sets up migration "cbpf": the group of sockets the supervisor
// holds, one per slot (adopted from an old supervisor, or opened as slots
// are forked; slot 0's at once, which fails if sockets the supervisor does
// not hold listen on the address). The reservation stays: it holds the port
// if every socket closes.
func (s *listenerSource) steerGroup(log *slog.Logger, stopTimeout time.Duration) (adopted int, err error) {
	g := s.adopted
	if g == nil {
		if g, err = sockets.NewGroup(s.addr); err != nil {
			return 0, err
		}
	}
	st := newSteering(g, log, stopTimeout)
	if s.adopted != nil {
		if err := g.Verify(); err != nil {
			return 0, err
		}
		st.adopt()
		s.steer = st
		return g.Len(), nil
	}
	if _, err := st.fileFor(0); err != nil {
		return 0, err
	}
	s.steer = st
	return 0, nil
}

// workerListener returns this worker's listener: the socket the supervisor
// holds for it (inherited at proto.ListenerFD, or received on activation as
// inherited), or else its own SO_REUSEPORT one.
func workerListener(env proto.WorkerEnv, inherited *os.File) (net.Listener, error) {
	if env.Migration != sharedMigration && env.Migration != string(sockets.MigrationCBPF) {
		return reuseport.Listen(context.Background(), "tcp", env.Addr)
	}
	f := inherited
	if f == nil {
		syscall.CloseOnExec(proto.ListenerFD)
		f = os.NewFile(proto.ListenerFD, "clusterflock-listener")
	}
	defer f.Close()
	return net.FileListener(f)
}
