//go:build unix

package supervisorproc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	if len(dir.Foreign) > 0 {
		log.Warn("control socket: its directory holds entries of other users, made while it was open; nothing here trusts them, remove them",
			"path", dir.Path, "foreign", fmt.Sprint(dir.Foreign))
	}
	bind := path
	if heir {
		bind = fmt.Sprintf("%s.%d", path, os.Getpid())
	}
	if err := clearSocketPath(bind, log); err != nil {
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
// An entry of another user (made while the directory was open to others,
// before rundir.Open made it private) is removed with a warning: this
// user's directory is private now, and nothing there is that user's to
// keep. Anything else of ours (a live socket, a file, a symbolic link) is
// refused, never followed or removed.
func clearSocketPath(path string, log *slog.Logger) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("clusterflock: control socket: %w", err)
	}
	if uid, other := rundir.OtherOwner(fi); other {
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("clusterflock: %s belongs to another user (uid %d) and cannot be removed: %w", path, uid, err)
		}
		log.Warn("control socket: removed an entry of another user from this user's private directory",
			"path", path, "owner_uid", uid, "mode", fi.Mode().String())
		return nil
	}
	if fi.Mode().Type() != fs.ModeSocket {
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

// conn answers one connection: one request, then replies until its
// outcome. The end of the client's input after its request (a half-close,
// as socat and nc -N do) is not a hang-up: the outcome is still written.
// The client is gone when its connection is closed or reset, or a reply
// cannot be written; then waiting for the outcome ends (the action itself
// goes on).
func (s *controlServer) conn(c *net.UnixConn) {
	defer c.Close()
	if uid, ok := peerAllowed(c); !ok {
		s.log.Warn("control socket: connection refused: another user", "uid", uid)
		writeReply(c, control.Reply{Done: true, Error: "this pool answers only its own user and root"})
		return
	}
	br := bufio.NewReaderSize(c, 4096)
	req, err := readRequest(c, br)
	if err != nil {
		writeReply(c, control.Reply{Done: true, Error: err.Error()})
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { // the server closes
		select {
		case <-s.quit:
			c.SetDeadline(time.Now())
		case <-ctx.Done():
		}
	})
	wg.Go(func() {
		watchPeer(c, br)
		cancel() // the client is gone (or the request is done)
	})
	out := &replies{c: c, gone: cancel}
	out.send(s.do(ctx, req, out.send))
	cancel()
	c.SetReadDeadline(time.Now()) // ends watchPeer
	wg.Wait()
}

// readRequest reads and parses the request, within 5 s: one line of at most
// control.MaxLine bytes, or what precedes the end of the client's input. A
// request followed by more than white space in what has arrived with it
// is refused: one request per connection (what arrives later is read and
// ignored by watchPeer).
func readRequest(c *net.UnixConn, br *bufio.Reader) (control.Request, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	line, err := readLine(br, control.MaxLine)
	if err != nil {
		return control.Request{}, fmt.Errorf("control: %w", err)
	}
	req, err := control.ParseRequest(line)
	if err != nil {
		return control.Request{}, err
	}
	if more, _ := br.Peek(br.Buffered()); len(bytes.TrimSpace(more)) > 0 {
		return control.Request{}, fmt.Errorf("control: data after the request line (one request per connection): %.40q", more)
	}
	return req, nil
}

// watchPeer returns once the client is gone: its connection reset, or
// closed; a client that only shut its side for writing still reads.
// Whatever it sends after its request is read and dropped. It returns too
// when the connection's read deadline passes.
func watchPeer(c *net.UnixConn, br *bufio.Reader) {
	if _, err := br.WriteTo(discard{}); err != nil {
		return // reset, or the deadline
	}
	// The end of the client's input: a half-close, or a close.
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	// Woken by each change of the socket's state (the kernel's edge), until
	// the peer has closed its end or the deadline passes.
	rc.Read(func(fd uintptr) bool { return peerClosed(fd) })
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// readLine reads one line of at most max bytes, or, at the end of input,
// what precedes it.
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
		case errors.Is(err, io.EOF) && len(bytes.TrimSpace(line)) > 0:
			return line, nil // the client shut its side after a request without a newline
		case errors.Is(err, io.EOF):
			return nil, errors.New("no request before the end of input")
		default:
			return nil, fmt.Errorf("reading the request: %w", err)
		}
	}
}

// replies writes a connection's replies until one cannot be written: the
// client is gone, and gone is called.
type replies struct {
	c      net.Conn
	gone   func()
	broken bool
}

func (r *replies) send(rep control.Reply) {
	if r.broken {
		return
	}
	if err := writeReply(r.c, rep); err != nil {
		r.broken = true
		r.gone()
	}
}

// writeReply writes one reply, within 5 s.
func writeReply(c net.Conn, r control.Reply) error {
	r.V = control.Version
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Write(append(b, '\n'))
	return err
}
