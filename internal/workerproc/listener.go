//go:build unix

package workerproc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
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
