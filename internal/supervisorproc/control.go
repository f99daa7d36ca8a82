//go:build unix

package supervisorproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/control"
	"github.com/clusterflock/clusterflock/internal/rundir"
)

// controlServer serves the pool's control socket (package control's
// protocol): owner-only, each peer's credentials checked; each action goes
// through the dispatcher, as a signal would, and the connection waits on
// the events for its outcome.
type controlServer struct {
	log  *slog.Logger
	path string
	ln   *net.UnixListener
	ino  uint64 // the socket file's inode: Close removes the path only if it is still ours
	d    *dispatcher
	bus  *eventBus
	info func() control.Status // the pool's fixed facts (pid, address, migration)
	wg   sync.WaitGroup
	quit chan struct{} // closed by Close

	mu      sync.Mutex
	result  error         // the pool's result, once done is closed
	done    chan struct{} // closed by finish: the pool has stopped
	stopped bool
}

// controlPath returns the socket's path for Options.ControlSocket ("":
// control.DefaultDir, "-": none).
func controlPath(opt, addr string) string {
	switch opt {
	case "-":
		return ""
	case "":
		return filepath.Join(control.DefaultDir(), control.SocketName(addr))
	}
	return opt
}

// openControl creates the control socket at path, in a private directory
// (rundir.Open: this user's, mode 0700; created so if missing; only
// control.DefaultDir is made 0700 if it is open to others, not a directory
// the program chose). A heir
// (binary upgrade) binds it beside the old supervisor's and takes the path
// over once its pool is ready (takeOver). Any failure is returned for the
// log: the pool runs without a control socket.
func openControl(path string, heir bool, log *slog.Logger) (*controlServer, error) {
	dir, err := rundir.Open(filepath.Dir(path), filepath.Dir(path) == control.DefaultDir())
	if err != nil {
		return nil, err
	}
	dir.Close()
	if dir.Repaired != 0 {
		log.Warn("control socket: its directory was open to other users; it is now 0700",
			"path", dir.Path, "mode", fmt.Sprintf("%#o", dir.Repaired))
	}
	bind := path
	if heir {
		bind = fmt.Sprintf("%s.%d", path, os.Getpid())
	}
	if err := clearSocketPath(bind); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bind, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(bind, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	var st syscall.Stat_t
	syscall.Lstat(bind, &st)
	s := &controlServer{log: log, path: path, ln: ln, ino: st.Ino, bus: newEventBus(), quit: make(chan struct{}), done: make(chan struct{})}
	if heir {
		s.path = bind // until takeOver
	}
	return s, nil
}

// clearSocketPath makes path free for a new socket: nothing is there, or a
// socket nobody answers on (of a supervisor that died), which it removes.
// Anything else (a live socket, a file, a symbolic link) is refused, never
// followed or removed.
func clearSocketPath(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("clusterflock: control socket: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("clusterflock: %s exists and is not a socket (mode %v); remove it", path, fi.Mode())
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("clusterflock: another process answers on %s", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("clusterflock: removing the stale socket %s: %w", path, err)
	}
	return nil
}

// takeOver moves a heir's socket to the pool's path: from now on this
// supervisor answers there.
func (s *controlServer) takeOver(path string) {
	if s == nil || s.path == path {
		return
	}
	if err := os.Rename(s.path, path); err != nil {
		s.log.Warn("control socket: cannot take over the old supervisor's path", "path", path, "err", err.Error())
		return
	}
	s.path = path
}

// serve accepts connections until Close.
func (s *controlServer) serve() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return // closed
		}
		s.wg.Go(func() { s.conn(c) })
	}
}

// finish records the pool's result and answers the stop requests waiting
// for it.
func (s *controlServer) finish(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.result, s.stopped = err, true
		close(s.done)
	}
}

// Close stops accepting, ends every connection, waits for them, and
// removes the socket file if it is still this server's.
func (s *controlServer) Close() {
	close(s.quit)
	s.ln.Close()
	s.wg.Wait()
	var st syscall.Stat_t
	if syscall.Lstat(s.path, &st) == nil && st.Ino == s.ino {
		os.Remove(s.path)
	}
}

// conn answers one connection: one request, then replies until its outcome.
func (s *controlServer) conn(c *net.UnixConn) {
	defer c.Close()
	if uid, ok := peerAllowed(c); !ok {
		s.log.Warn("control socket: connection refused: another user", "uid", uid)
		s.write(c, control.Reply{Done: true, Error: "this pool answers only its own user and root"})
		return
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReaderSize(c, 4096)
	line, err := readLine(br, control.MaxLine)
	if err != nil {
		s.write(c, control.Reply{Done: true, Error: "control: " + err.Error()})
		return
	}
	req, err := control.ParseRequest(line)
	if err != nil {
		s.write(c, control.Reply{Done: true, Error: err.Error()})
		return
	}
	c.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the client hung up, or the server closes
		select {
		case <-s.quit:
			c.SetDeadline(time.Now())
		case <-ctx.Done():
		}
	}()
	go func() {
		br.WriteTo(discard{}) // EOF: the client hung up
		cancel()
	}()
	s.write(c, s.do(ctx, req, func(r control.Reply) { s.write(c, r) }))
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// readLine reads one line of at most max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max {
			return nil, fmt.Errorf("request longer than %d bytes", max)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return nil, fmt.Errorf("reading the request: %w", err)
		}
	}
}

func (s *controlServer) write(c net.Conn, r control.Reply) {
	r.V = control.Version
	b, _ := json.Marshal(r)
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write(append(b, '\n'))
}
