//go:build unix

package workerproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/reuseport"
)

// listen returns this worker's listener: the socket the supervisor holds for
// it (inherited at proto.ListenerFD, or received on activation as
// inherited), or else its own SO_REUSEPORT one (see enableMigration).
func listen(env proto.WorkerEnv, inherited *os.File) (net.Listener, error) {
	if !env.Inherited {
		return reuseport.Listen(context.Background(), "tcp", env.Addr)
	}
	f := inherited
	if f == nil {
		syscall.CloseOnExec(proto.ListenerFD)
		f = os.NewFile(proto.ListenerFD, "clusterflock-listener")
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// reportingListener is the listener the serve function gets. Its first
// Close (the serve function's or the worker's, whichever comes first: the
// other waits for it) closes the listener and then tells the supervisor,
// if it reads it, that the listener is closed: the supervisor asks the
// next leaving worker to stop only then, so that no two listeners of the
// group close at once (see supervisor.StopInTurn). Go's Close returns once
// the socket is closed, so the kernel has migrated its queue by then.
type reportingListener struct {
	net.Listener
	status *statusWriter
	once   sync.Once
	err    error
}

// Close closes the listener; a Close after the first returns what the
// listener's own does then (net.ErrClosed).
func (l *reportingListener) Close() error {
	first := false
	l.once.Do(func() {
		first = true
		l.err = l.Listener.Close()
		if l.status.readsClosed {
			l.status.send(proto.Message{Kind: proto.Closed})
		}
	})
	if !first {
		return l.Listener.Close()
	}
	return l.err
}

// enableMigration prepares the worker's own listener for the pool's
// migration (eBPF: it attaches the program to the socket's group); an
// inherited socket is the supervisor's to prepare.
func enableMigration(ln net.Listener, env proto.WorkerEnv, log *slog.Logger) {
	if env.Inherited {
		return
	}
	// The serve function runs already: if it has failed and closed ln,
	// serving reports that, and there is nothing to prepare.
	if err := sockets.EnableMigration(ln, sockets.Migration(env.Migration)); err != nil && !errors.Is(err, net.ErrClosed) {
		log.Warn("cannot enable connection migration on this worker's listener", "migration", env.Migration, "err", err.Error())
	}
}

// SyscallConn reaches the socket, as a *net.TCPListener's does (a serve
// function may set socket options on it).
func (l *reportingListener) SyscallConn() (syscall.RawConn, error) {
	sc, ok := l.Listener.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("clusterflock: the listener (%T) has no SyscallConn", l.Listener)
	}
	return sc.SyscallConn()
}

// File returns a copy of the socket's descriptor, as a *net.TCPListener's
// File does.
func (l *reportingListener) File() (*os.File, error) {
	f, ok := l.Listener.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("clusterflock: the listener (%T) has no File", l.Listener)
	}
	return f.File()
}
